"""The process that runs one notebook: a fresh kernel, papermill, and a report.

A *runner* executes exactly one run and exits. It runs as the user, in the user's
environment (local mode: a fork of the jobs service's forkserver that became the user's
system account; containers: ``python -m hubforge.jobs.runner`` in the profile's image;
Kubernetes: the same command in a Job's pod). It talks to the service through a
*channel* of JSON messages, one per line:

runner to service
    ``{"event": "ready", "kernel": ..., "pid": ...}`` — the kernel is up and answering;
    ``{"event": "progress", "cell": i, "cells": n}`` — cell i of n started;
    ``{"event": "snapshot", "notebook": {...}}`` — the output so far (at most every
    `SNAPSHOT_SECONDS`, so a run killed by its timeout still leaves its partial output);
    ``{"event": "done", "status": "succeeded" | "failed", "reason": ..., "notebook": {...}}``.
service to runner
    ``{"command": "run", "run_id": ..., "notebook": {...}, "parameters": {...},
    "cwd": ..., "env": {...}, "input_path": ...}`` — the one run to execute.

Why a runner starts its kernel *before* it is given a run: a kernel start (a new Python
that imports IPython) is most of the second papermill takes for a trivial notebook.
The service keeps a warm runner per user and profile in use, so a run starts on a kernel
that is already answering. Each kernel still serves one run only: it is new, its
namespace empty, and it dies with its runner. When the runner's Python is the kernel's
(the ``python3`` kernel of this installation), the kernel is a *fork* of the runner,
which has IPython imported already; any other kernel is started the usual way from its
kernel spec. The working directory and the run's environment variables are set in the
kernel by a silent request before the first cell, so they are the run's, not the warm
runner's.

Execution is papermill's (`papermill.execute_notebook` with its nbclient engine), so the
output notebook is what ``papermill`` writes: the injected-parameters cell, each cell's
outputs and papermill metadata, and on failure the error banner and the failing cell
marked. A small engine (`HubForgeEngine`) adds two things: it uses the runner's already
connected kernel client, and it reports progress.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import IO

#: Seconds between two snapshots of the output notebook sent during a run.
SNAPSHOT_SECONDS = 2.0
#: Modules the forkserver imports once, inherited by every runner (see `preload`).
PRELOAD = ["hubforge.jobs.runner"]

log = logging.getLogger("hubforge.jobs.runner")


# --- the channel ---------------------------------------------------------------------


class Channel:
    """JSON lines over a pair of file objects; `send` is thread-safe."""

    def __init__(self, reader: IO[bytes], writer: IO[bytes]):
        self.reader = reader
        self.writer = writer
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self.writer.write(data)
            self.writer.flush()

    def receive(self) -> dict | None:
        line = self.reader.readline()
        return json.loads(line) if line.strip() else None

    def close(self) -> None:
        for f in (self.reader, self.writer):
            with contextlib.suppress(OSError):
                f.close()


class HTTPChannel:
    """The channel of a runner that cannot hold a pipe to the service (a Kubernetes Job):
    each message is POSTed to ``--report-url`` with the run's token."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.token = token

    def send(self, message: dict) -> None:
        import urllib.request

        request = urllib.request.Request(
            self.url, data=json.dumps(message).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        for attempt in range(5):
            try:
                with urllib.request.urlopen(request, timeout=30):
                    return
            except OSError as e:
                log.warning("reporting to the jobs service failed (attempt %d): %s", attempt + 1, e)
                time.sleep(2**attempt)

    def close(self) -> None:
        """Nothing to close: every message is its own request."""


# --- the kernel ----------------------------------------------------------------------


class ForkedKernel:
    """A kernel forked from this process, shaped like the ``Popen`` jupyter_client expects."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _own_python_kernel(kernel_name: str) -> bool:
    """Whether `kernel_name` runs this very Python with ipykernel (so it can be forked)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        return False
    argv = spec.argv
    if len(argv) < 3 or argv[1:3] != ["-m", "ipykernel_launcher"]:
        return False
    exe = argv[0]
    if exe in ("python", "python3", "{python}"):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(exe, sys.executable)
    return False


def _fork_kernel(connection_file: str, close: list) -> int:
    """Fork this process into an IPython kernel serving `connection_file`; its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for f in close:  # the runner's channel is not the kernel's business
            with contextlib.suppress(OSError):
                f.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        from ipykernel.kernelapp import IPKernelApp

        # parent_handle: the kernel exits when its runner does (ipykernel's parent poller).
        argv = ["-f", connection_file, "--HistoryManager.hist_file=:memory:", "--IPKernelApp.quiet=True",
                f"--IPKernelApp.parent_handle={os.getppid()}"]
        sys.argv = [sys.executable, "-m", "ipykernel_launcher", *argv]
        app = IPKernelApp.instance()
        app.initialize(argv)
        app.start()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def start_kernel(kernel_name: str, close: list | None = None, cwd: str | None = None):
    """A started kernel for `kernel_name`: ``(manager, client)``, the client ready.

    The manager is an ``AsyncKernelManager``: nbclient drives it from papermill's event
    loop. A fork of this process when possible (see the module doc), else a normal start.
    """
    from jupyter_client.connect import write_connection_file
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_client.provisioning import LocalProvisioner
    from jupyter_core.utils import run_sync

    if _own_python_kernel(kernel_name):
        runtime = tempfile.mkdtemp(prefix="hubforge-kernel-")
        connection_file, info = write_connection_file(
            fname=os.path.join(runtime, "kernel.json"), transport="ipc", ip=os.path.join(runtime, "k"),
        )
        pid = _fork_kernel(connection_file, close or [])
        km = AsyncKernelManager(kernel_name=kernel_name, connection_file=connection_file)
        km.load_connection_file()
        provisioner = LocalProvisioner(kernel_id=km.kernel_id or "forked", kernel_spec=None, parent=km)
        provisioner.process = ForkedKernel(pid)
        provisioner.pid = provisioner.pgid = pid
        provisioner.connection_info = info
        km.provisioner = provisioner
        km._launch_args = {}
        km._connection_file_written = True
    else:
        km = AsyncKernelManager(kernel_name=kernel_name)
        run_sync(km.start_kernel)(cwd=cwd or os.getcwd(), extra_arguments=["--HistoryManager.hist_file=:memory:"])
    kc = km.client()
    kc.start_channels()
    run_sync(wait_ready)(kc, 60)
    return km, kc


async def wait_ready(kc, timeout: float) -> None:
    """Wait until the kernel answers on shell and its IOPub reaches us.

    Like jupyter_client's ``wait_for_ready``, without its final 0.2 s wait for IOPub to
    go quiet: the first IOPub message proves the subscription is up (no output of the
    first cell can be lost), and stray status messages are ignored by nbclient, which
    matches replies to its own requests.
    """
    import asyncio
    from queue import Empty

    deadline = time.monotonic() + timeout
    while True:
        msg_id = kc.kernel_info()
        try:
            reply = await kc.get_shell_msg(timeout=1)
        except Empty:
            if not await kc.is_alive():
                raise RuntimeError("the kernel died while starting") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"the kernel did not answer within {timeout:g} s") from None
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    while time.monotonic() < deadline:
        try:
            await kc.get_iopub_msg(timeout=1)
            return
        except Empty:
            msg_id = kc.kernel_info()  # provoke a status message
            await asyncio.sleep(0)
    raise TimeoutError(f"the kernel's output channel did not connect within {timeout:g} s")


def prepare_kernel(kc, cwd: str, env: dict[str, str]) -> None:
    """Set the run's working directory (`cwd`, else ``$HOME`` when `cwd` does not exist)
    and environment in the kernel, silently."""
    from jupyter_core.utils import run_sync

    code = (
        "import os as __hf_os\n"
        "try:\n"
        f"    __hf_os.chdir({cwd!r})\n"
        "except OSError:\n"
        "    __hf_os.chdir(__hf_os.path.expanduser('~'))\n"
        f"__hf_os.environ.update({env!r})\n"
        "del __hf_os\n"
    )

    async def execute():
        msg_id = kc.execute(code, silent=True, store_history=False)
        while True:
            reply = await kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                if reply["content"].get("status") != "ok":
                    raise RuntimeError(f"cannot enter {cwd}: {reply['content'].get('evalue')}")
                return

    run_sync(execute)()


# --- papermill -----------------------------------------------------------------------


def _engine(kc, channel, total_cells: list[int]):
    """A papermill engine that runs on the ready client `kc` and reports progress."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine

    from jupyter_core.utils import run_sync

    class WarmClient(PapermillNotebookClient):
        async def async_start_new_kernel_client(self):
            self.kc = kc
            self.kc.allow_stdin = False
            return self.kc

        # nbclient binds the synchronous wrapper to its own coroutine: rebind it here.
        start_new_kernel_client = run_sync(async_start_new_kernel_client)

    class HubForgeEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            cells = len(nb_man.nb.cells)
            total_cells[0] = cells
            started = nb_man.cell_start
            completed = nb_man.cell_complete
            last = [0.0]

            def cell_start(cell, cell_index=None, **kw):
                started(cell, cell_index, **kw)
                channel.send({"event": "progress", "cell": (cell_index or 0) + 1, "cells": cells})

            def cell_complete(cell, cell_index=None, **kw):
                completed(cell, cell_index, **kw)
                now = time.monotonic()
                if now - last[0] >= SNAPSHOT_SECONDS and cell_index is not None and cell_index + 1 < cells:
                    last[0] = now
                    channel.send({"event": "snapshot", "notebook": nb_man.nb})

            nb_man.cell_start = cell_start
            nb_man.cell_complete = cell_complete
            kwargs.pop("km", None)
            return WarmClient(
                nb_man, km=kwargs.pop("kernel_manager"), kernel_name=kernel_name, log=logging.getLogger("papermill"),
                log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file,
                startup_timeout=start_timeout, timeout=execution_timeout, **kwargs,
            ).execute()

    return HubForgeEngine


def execute(command: dict, km, kc, channel) -> dict:
    """Execute the run `command` on the ready kernel; the ``done`` message to send."""
    import nbformat
    import papermill
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillExecutionError

    total = [0]
    papermill_engines.register("hubforge", _engine(kc, channel, total))
    nb = nbformat.from_dict(command["notebook"])
    workdir = tempfile.mkdtemp(prefix="hubforge-run-")
    output = os.path.join(workdir, "output.ipynb")
    status, reason = "succeeded", ""
    try:
        papermill.execute_notebook(
            nb, output, parameters=command.get("parameters") or {}, engine_name="hubforge",
            kernel_name=km.kernel_name, kernel_manager=km, progress_bar=False, log_output=True,
            request_save_on_cell_execute=False, cwd=None,
        )
    except PapermillExecutionError as e:
        status, reason = "failed", f"cell {e.exec_count or e.cell_index + 1} raised {e.ename}: {e.evalue}"[:2000]
    except Exception as e:  # the kernel died, a message timed out, ...: a failed run
        log.exception("run %s failed outside the notebook", command.get("run_id"))
        status, reason = "failed", f"{type(e).__name__}: {e}"[:2000]
    try:
        with open(output, encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError):
        result = None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(output)
            os.rmdir(workdir)
    if result is not None:
        meta = result.setdefault("metadata", {}).setdefault("papermill", {})
        meta["input_path"] = command.get("input_path") or meta.get("input_path")
        meta["output_path"] = command.get("output_path") or meta.get("output_path")
    return {"event": "done", "status": status, "reason": reason, "notebook": result}


def serve(channel, kernel_name: str, close: list | None = None) -> int:
    """A warm runner: start the kernel, say ready, run the one command it gets, exit."""
    try:
        km, kc = start_kernel(kernel_name, close=close)
    except Exception as e:
        log.exception("cannot start kernel %s", kernel_name)
        channel.send({"event": "failed", "reason": f"cannot start kernel {kernel_name!r}: {e}"})
        return 1
    try:
        channel.send({"event": "ready", "kernel": kernel_name, "pid": os.getpid()})
        command = channel.receive()
        if not command or command.get("command") != "run":
            return 0  # told to stop (or the service went away) before any run
        log.info("run %s: executing %s", command.get("run_id"), command.get("input_path"))
        try:
            prepare_kernel(kc, command.get("cwd") or os.getcwd(), command.get("env") or {})
        except Exception as e:
            channel.send({"event": "done", "status": "failed", "reason": str(e), "notebook": None})
            return 1
        channel.send(execute(command, km, kc, channel))
        return 0
    finally:
        stop_kernel(km, kc)


def stop_kernel(km, kc) -> None:
    """Stop the run's kernel: it served its one run (the service also kills what is left)."""
    with contextlib.suppress(Exception):
        kc.stop_channels()
    if km.provisioner is not None and km.provisioner.process is not None:
        km.provisioner.process.kill()
        km.provisioner.process.wait(5)
    with contextlib.suppress(OSError):
        km.cleanup_connection_file()


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("traitlets", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def forked_main(channel_sock: socket.socket, log_sock: socket.socket, kernel_name: str,
                run_as: tuple | None, cgroups: list[str], home: str, env: dict[str, str]) -> None:
    """Body of a local runner forked by the service's forkserver (runs in the child)."""
    os.setsid()
    if cgroups:
        from ..spawners.cgroups import CgroupManager

        CgroupManager.join(cgroups)
    # Nothing of root's may reach the user's code: close every inherited descriptor
    # (the forkserver's, multiprocessing's resource tracker's) but the two sockets.
    keep = {0, 1, 2, channel_sock.fileno(), log_sock.fileno()}
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    if run_as is not None:
        uid, gid, groups = run_as
        os.setgid(gid)
        os.setgroups(list(groups))
        os.setuid(uid)
    os.dup2(log_sock.fileno(), 1)
    os.dup2(log_sock.fileno(), 2)
    log_sock.close()
    os.umask(0o077)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(home)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    _setup_logging()
    reader = channel_sock.makefile("rb")
    writer = channel_sock.makefile("wb")
    channel = Channel(reader, writer)
    code = serve(channel, kernel_name, close=[reader, writer, channel_sock])
    channel.close()
    channel_sock.close()
    sys.exit(code)


def preload() -> None:
    """Import what every run needs once, in the forkserver (see hubforge.jobs.executors)."""
    import nbformat
    import papermill  # noqa: F401  (imported for the forks)
    from ipykernel import debugger, ipkernel, kernelapp  # noqa: F401  (the kernel's own start-up)
    from IPython.core import interactiveshell  # noqa: F401
    from jupyter_client.manager import AsyncKernelManager  # noqa: F401

    # nbformat compiles its JSON schema validator on first use (a tenth of a second).
    nbformat.validate(nbformat.v4.new_notebook())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hubforge.jobs.runner",
        description="Run one scheduled notebook for the HubForge jobs service. Started by the "
        "service (stdin/stdout carry its JSON messages) or by a Kubernetes Job (--input, --report-url).",
    )
    parser.add_argument("--kernel", default="python3", help="kernel to start before the run arrives (warm mode)")
    parser.add_argument("--input", help="a JSON file with the run command (batch mode, Kubernetes)")
    parser.add_argument("--report-url", help="where to POST the messages (batch mode); token in $HUBFORGE_RUN_TOKEN")
    args = parser.parse_args(argv)
    _setup_logging()
    if args.input:
        if not args.report_url:
            parser.error("--input needs --report-url")
        with open(args.input, encoding="utf-8") as f:
            command = json.load(f)
        channel = HTTPChannel(args.report_url, os.environ.get("HUBFORGE_RUN_TOKEN", ""))
        km, kc = start_kernel(command.get("kernel", args.kernel))
        try:
            prepare_kernel(kc, command.get("cwd") or os.getcwd(), command.get("env") or {})
            channel.send(execute(command, km, kc, channel))
        finally:
            stop_kernel(km, kc)
        return 0
    # Container mode: stdout is the channel, so nothing else may write there.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = Channel(sys.stdin.buffer, out)
    return serve(channel, args.kernel, close=[out])


if __name__ == "__main__":
    sys.exit(main())
