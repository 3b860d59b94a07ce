"""Start Dask schedulers and workers in a fraction of a second: fork, don't exec.

A scheduler or worker started the usual way (``dask scheduler`` in a new interpreter)
spends most of its start-up importing Python: distributed, tornado, bokeh for the
dashboard, numpy and pandas for the work. dask-gateway's local backend pays that once
per process, which is most of the seconds a cluster takes to be ready.

`ForkLauncher` pays it once per gateway. It runs the standard library's *forkserver*
(`multiprocessing.get_context("forkserver")`) with those modules preloaded; each
scheduler or worker is a fork of that server that then, in the child:

1. starts its own session (so a signal to the gateway does not reach it) and sends its
   output to its log file;
2. joins its cluster's control groups (CPU and memory limits, kill-all at stop), then
   drops root for the user's system account, like dask-gateway's `LocalBackend`;
3. takes the environment dask-gateway prepared (TLS files, gateway token and address)
   and re-reads the Dask configuration from it (`dask.config.refresh`);
4. runs the same command-line entry point ``dask scheduler`` / ``dask worker`` would
   (`distributed.cli.dask_scheduler.main`, `distributed.cli.dask_worker.main`), with
   the arguments dask-gateway built.

So the processes are exactly what `LocalBackend` starts, from the same installation,
only without the interpreter start-up. The forkserver reaps its children, so a stopped
process's pid disappears and dask-gateway's ``kill(pid, 0)`` liveness check stays right.
Workers run without a nanny (``--no-nanny``): the nanny would start the worker in yet
another fresh interpreter; the cluster's memory control group enforces the limit the
nanny would otherwise watch.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from dataclasses import dataclass

from ..forkserver import KEPT_ENVIRONMENT, Forkserver  # noqa: F401  (KEPT_ENVIRONMENT: re-exported)

PR_SET_NAME = 15


#: Imported once by the forkserver, inherited by every scheduler and worker.
PRELOAD = [
    "hubforge.dask._preload",
]


@dataclass(frozen=True)
class RunAs:
    """A system account to become: uid, gid, supplementary groups and home."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def _child_main(role: str, argv: list[str], env: dict[str, str], log_path: str, workdir: str,
                run_as: RunAs | None, cgroups: list[str]) -> None:
    """Body of a forked scheduler or worker (runs in the child; see the module doc)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):  # Linux: the name ps and top show
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, f"dask-{role}".encode(), 0, 0, 0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if cgroups:
        from ..spawners.cgroups import CgroupManager

        CgroupManager.join(cgroups)
    if run_as is not None:
        os.setgid(run_as.gid)
        os.setgroups(list(run_as.groups))
        os.setuid(run_as.uid)
    # Opened as the user (never as root in a directory the user owns), never through a
    # link, and new: a planted symlink cannot point a root-opened file elsewhere.
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.umask(0o077)
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(env)

    import dask.config

    dask.config.refresh()
    if role == "scheduler":
        from distributed.cli.dask_scheduler import main
    else:
        from distributed.cli.dask_worker import main
    sys.argv = [f"dask {role}", *argv]
    main.main(args=argv, prog_name=f"dask {role}", standalone_mode=True)


class ForkLauncher(Forkserver):
    """Starts schedulers and workers as forks of one preloaded forkserver."""

    def __init__(self, preload: list[str] | None = None):
        super().__init__(list(PRELOAD if preload is None else preload))

    def start(self, role: str, argv: list[str], env: dict[str, str], log_path: str, workdir: str,
              run_as: RunAs | None = None, cgroups: list[str] | None = None) -> int:
        """Fork a ``dask scheduler`` or ``dask worker`` with these arguments; returns its pid."""
        if role not in ("scheduler", "worker"):
            raise ValueError(f"role must be 'scheduler' or 'worker', not {role!r}")
        return self.fork(
            _child_main, (role, list(argv), dict(env), log_path, workdir, run_as, list(cgroups or [])),
            name=f"dask-{role}",
        )
