"""What the Dask forkserver imports once, so forked schedulers and workers start warm.

Everything a scheduler or worker imports on start-up (see `hubforge.dask.launcher`):
the command-line entry points, dask-gateway's scheduler plugin, the dashboard's bokeh,
and the libraries nearly every computation needs. A missing optional one is skipped.
"""

import contextlib
import importlib
import signal

from hubforge.forkserver import die_with_parent

die_with_parent(signal.SIGKILL)  # the forkserver goes when the gateway goes

import dask  # noqa: F401
import dask.config  # noqa: F401
import distributed  # noqa: F401
import distributed.cli.dask_scheduler  # noqa: F401
import distributed.cli.dask_worker  # noqa: F401
import dask_gateway.scheduler_preload  # noqa: F401

import hubforge.dask.scheduler_preload  # noqa: F401

for _name in ("distributed.dashboard.scheduler", "numpy", "pandas", "dask.array", "dask.dataframe", "pyarrow"):
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)
