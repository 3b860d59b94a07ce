"""Start Python processes in milliseconds: fork a preloaded server, don't exec.

A new Python that imports distributed, papermill or IPython spends most of its start-up
importing. `Forkserver` pays that once: it runs the standard library's *forkserver*
(`multiprocessing.get_context("forkserver")`) with the given modules preloaded, and
each process is a fork of it. Used by the Dask gateway (schedulers and workers,
:mod:`hubforge.dask.launcher`) and the jobs service (notebook runners,
:mod:`hubforge.jobs.executors`).

The forkserver, and so every process forked from it, starts with only
`KEPT_ENVIRONMENT` of the caller's environment: a process can always read the
environment it started with (``/proc/self/environ``), whatever it sets later, and a hub
service's holds its hub token. A child sets the environment it needs itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

#: What the forkserver keeps of its parent's environment (see the module doc).
KEPT_ENVIRONMENT = {"PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TZ", "HUBFORGE_ROOT"}


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Have the kernel send this process `signum` when its parent dies (Linux).

    A hub service calls it at start: a hub killed without the chance to stop its
    services (``kill -9``, the OOM killer) must not leave them running, holding ports
    and forking jobs nobody sees. A forkserver calls it from its preload, so it follows
    the service that started it. "Parent" is the *thread* that started the process:
    start forkservers from the main thread.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the call: act on it now
        os.kill(os.getpid(), signum)


def _noop() -> None:
    """What `Forkserver.warm` runs: nothing, to start the forkserver."""


class Forkserver:
    """Forks of one preloaded forkserver; the parent reaps them (`reap`); `fork` starts one."""

    def __init__(self, preload: list[str]):
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(list(preload))
        self._procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self._warm = False

    def warm(self) -> None:
        """Start the forkserver now (it imports the preload), with a scrubbed environment.

        Call it before other threads use the environment.
        """
        if self._warm:
            return
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update({k: v for k, v in saved.items() if k in KEPT_ENVIRONMENT})
        try:
            p = self._ctx.Process(target=_noop)
            p.start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        p.join()
        p.close()
        self._warm = True

    def fork(self, target: Callable, args: tuple, name: str, daemon: bool = False) -> int:
        """Fork a process running ``target(*args)``; returns its pid.

        A `daemon` process is terminated, not waited for, when this process exits."""
        self.warm()
        self.reap()
        p = self._ctx.Process(target=target, name=name, args=args, daemon=daemon)
        p.start()
        self._procs[p.pid] = p
        return p.pid

    def reap(self) -> None:
        """Release the handles of processes that have ended."""
        for pid, p in list(self._procs.items()):
            if not p.is_alive():
                p.close()
                del self._procs[pid]
