"""Where a served version's worker runs: a local process, a podman container, a pod.

Every backend has the same small contract (dask-gateway's shape: a generic core in
:mod:`hubforge.models.serving`, small backends here):

* ``await start(spec) -> (host, port, handle)``: start the worker of ``spec`` (a
  :class:`WorkerSpec`) and return once it listens; raise :class:`WorkerFailed` with the
  reason (the end of its log) if it does not;
* ``await stop(handle)``: stop it and remove what it left;
* ``await close()``: stop everything (the service is stopping).

Workers fetch their model from the service (``spec.fetch_url``, authenticated with
``spec.key``), so no backend needs to share the service's files with the user's account.
The Kubernetes backend is :class:`hubforge.models.kubernetes.KubernetesBackend`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("hubforge.models")

READY = re.compile(rb"hubforge-model-worker listening on (\d+)")
#: Threads of the numeric libraries in a worker: one. Batches are small, and on a busy
#: machine the worker's extra threads only fight the service and each other.
THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


class WorkerFailed(RuntimeError):
    """A worker did not start; the message says why, for the model's owner."""


@dataclass
class WorkerSpec:
    model: str
    version: int
    owner: str
    key: str
    fetch_url: str
    image: str | None = None
    model_dir: str = ""  # unused: workers fetch their model


def _tail(path: Path, size: int = 4096) -> str:
    """The end of a worker's log: the lines worth showing when it failed."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^\w+(\.\w+)*(Error|Exception)\b", line)]
    return (errors[-1] if errors else lines[-1] if lines else "")[:500]


class ProcessBackend:
    """Shared by the local and container backends: a child process announcing its port."""

    def __init__(self, logs_dir: str, load_timeout: float = 300):
        self.logs_dir = Path(logs_dir)
        self.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.load_timeout = load_timeout
        self.procs: set = set()

    def log_path(self, spec: WorkerSpec) -> Path:
        return self.logs_dir / f"{spec.model}-v{spec.version}.log"

    def remove_log(self, model: str, version: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.logs_dir / f"{model}-v{version}.log").unlink()

    async def _launch(self, spec: WorkerSpec, command: list[str], **kwargs) -> tuple[str, int, object]:
        path = self.log_path(spec)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=fd,
                start_new_session=True, **kwargs,
            )
        finally:
            os.close(fd)
        self.procs.add(proc)
        proc.stdin.write(spec.key.encode() + b"\n")
        proc.stdin.close()
        try:
            port = await asyncio.wait_for(self._port(proc), self.load_timeout)
        except asyncio.TimeoutError:
            await self._kill(proc)
            raise WorkerFailed(f"the model did not load within {self.load_timeout:g} s (models.load_timeout)") from None
        except BaseException:
            await self._kill(proc)
            raise
        if port is None:
            await self._kill(proc)
            reason = _tail(path) or f"exit status {proc.returncode}"
            raise WorkerFailed(f"the model's process stopped while loading: {reason}")
        asyncio.ensure_future(self._drain(proc))
        return "127.0.0.1", port, proc

    async def _port(self, proc) -> int | None:
        while line := await proc.stdout.readline():
            match = READY.search(line)
            if match:
                return int(match.group(1))
        return None

    async def _drain(self, proc) -> None:
        with contextlib.suppress(Exception):  # keep the pipe from filling up
            while await proc.stdout.read(65536):
                continue

    async def _kill(self, proc, grace: float = 5) -> None:
        self.procs.discard(proc)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()

    async def stop(self, handle) -> None:
        await self._kill(handle)

    async def close(self) -> None:
        await asyncio.gather(*(self._kill(p, grace=2) for p in list(self.procs)), return_exceptions=True)


class LocalBackend(ProcessBackend):
    """Workers as local processes of the hub's Python environment (the embedded default).

    As root with ``system-users`` isolation (what the local spawner does), a worker runs
    as its owner's system account, in their home folder; otherwise as the service's own
    account. Either way it dies with the service (``PR_SET_PDEATHSIG``).
    """

    def __init__(self, logs_dir: str, *, isolation: str = "shared", system_user_prefix: str = "hf-",
                 home_root: str = "/home", shared_home_root: str = "", load_timeout: float = 300):
        super().__init__(logs_dir, load_timeout)
        self.isolation = isolation
        self.system_user_prefix = system_user_prefix
        self.home_root = home_root
        self.shared_home_root = shared_home_root or str(Path(logs_dir).parent / "homes")
        self._locks: dict[str, asyncio.Lock] = {}

    async def start(self, spec: WorkerSpec) -> tuple[str, int, object]:
        from ..spawners.local import ensure_system_account, system_user_name

        env = {"PATH": os.path.dirname(os.path.realpath(sys.executable)) + os.pathsep + os.environ.get("PATH", os.defpath),
               "LANG": os.environ.get("LANG", "C.UTF-8"), "PYTHONUNBUFFERED": "1",
               "HUBFORGE_MODEL": f"{spec.model}@v{spec.version}", **THREAD_ENV}
        kwargs: dict = {}
        if self.isolation == "system-users":
            account = system_user_name(self.system_user_prefix, spec.owner)
            home = os.path.join(self.home_root, account)
            async with self._locks.setdefault(spec.owner, asyncio.Lock()):
                pw = await ensure_system_account(account, home, spec.owner)
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": os.getgrouplist(account, pw.pw_gid),
                      "cwd": pw.pw_dir}
            env.update(HOME=pw.pw_dir, USER=account)
        else:
            home = os.path.join(self.shared_home_root, re.sub(r"[^A-Za-z0-9._-]", "_", spec.owner))
            os.makedirs(home, mode=0o700, exist_ok=True)
            kwargs = {"cwd": home}
            env.update(HOME=home, USER=spec.owner)
        command = [sys.executable, "-m", "hubforge.models.worker", "--fetch", spec.fetch_url,
                   "--listen", "127.0.0.1:0", "--key-file", "-"]
        return await self._launch(spec, command, env=env, preexec_fn=_die_with_parent, **kwargs)


def _die_with_parent() -> None:
    from ..forkserver import die_with_parent

    die_with_parent()


class ContainerBackend(ProcessBackend):
    """Workers as podman (or Docker) containers of the model's image, on the host network
    bound to 127.0.0.1, as the image's unprivileged user, with ``--cpus``/``--memory``."""

    def __init__(self, logs_dir: str, *, engine: str = "podman", image: str, environ: dict | None = None,
                 cpus: float = 2, memory: str = "2g", load_timeout: float = 300):
        super().__init__(logs_dir, load_timeout)
        self.engine = engine
        self.image = image
        self.environ = environ
        self.cpus = cpus
        self.memory = memory
        self.names: dict[int, str] = {}

    def container_name(self, spec: WorkerSpec) -> str:
        return f"hubforge-model-{spec.model.replace('_', '-')}-v{spec.version}-{os.urandom(3).hex()}"

    def command(self, spec: WorkerSpec, name: str) -> list[str]:
        """The ``podman run`` command line (a pure function of its arguments: tested)."""
        env = [f"--env={k}={v}" for k, v in sorted(THREAD_ENV.items())]
        return [
            self.engine, "run", "--rm", "-i", "--name", name, "--network", "host",
            "--label", "hubforge.role=model", "--label", f"hubforge.model={spec.model}",
            "--label", f"hubforge.model-version={spec.version}", "--label", f"hubforge.owner={spec.owner}",
            f"--cpus={self.cpus:g}", f"--memory={self.memory}", "--security-opt", "no-new-privileges",
            "--cap-drop", "ALL", *env,
            spec.image or self.image,
            "python", "-m", "hubforge.models.worker", "--fetch", spec.fetch_url,
            "--listen", "127.0.0.1:0", "--key-file", "-",
        ]

    async def start(self, spec: WorkerSpec) -> tuple[str, int, object]:
        name = self.container_name(spec)
        host, port, proc = await self._launch(spec, self.command(spec, name), env=self.environ)
        self.names[proc.pid] = name
        return host, port, proc

    async def _kill(self, proc, grace: float = 5) -> None:
        name = self.names.pop(proc.pid, None)
        if name:
            rm = await asyncio.create_subprocess_exec(
                self.engine, "rm", "-f", "-t", "2", name, env=self.environ,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await rm.wait()
        await super()._kill(proc, grace)

    async def sweep(self, keep: set | None = None) -> None:
        """Remove model containers a killed service left behind (at start: none is kept)."""
        proc = await asyncio.create_subprocess_exec(
            self.engine, "ps", "-aq", "--filter", "label=hubforge.role=model", env=self.environ,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        ids = out.decode().split()
        if ids:
            rm = await asyncio.create_subprocess_exec(self.engine, "rm", "-f", *ids, env=self.environ,
                                                      stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await rm.wait()
