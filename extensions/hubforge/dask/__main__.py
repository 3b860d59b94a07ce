"""``python -m hubforge.dask``: the ``dask-gateway`` hub service (`hubforge.dask.gateway`).

Run as a package ``__main__`` on purpose: the gateway forks its Dask processes from a
multiprocessing forkserver, and a child re-imports the parent's main module unless it
is a ``__main__`` module (see `hubforge.dask.launcher`).
"""

from hubforge.dask.gateway import main
from hubforge.forkserver import die_with_parent

if __name__ == "__main__":
    die_with_parent()  # stop with the hub, even a killed one
    main()
