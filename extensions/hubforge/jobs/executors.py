"""Where runs execute: local processes as the user, or containers of the profile's image.

An executor starts *runners* (:mod:`hubforge.jobs.runner`) and hands back a `Slot`: the
runner's message channel, its log, and a way to kill it with everything it started. The
scheduler (:mod:`hubforge.jobs.scheduler`) decides when; the executor only knows how.

* `LocalExecutor` (mode ``local``): a fork of the service's forkserver (papermill and
  IPython preloaded), in a control group of its own with the profile's CPU and memory
  limits (as root), which then becomes the user's system account (the same account as
  the user's server, created if missing) and works in the user's home.
* `ContainerExecutor` (mode ``containers``): ``podman run -i --rm`` of the profile's image
  with the user's home volume, host networking, the profile's CPU and memory limits; the
  channel is the container's stdin and stdout.
* Kubernetes: a Job per run, built by :func:`hubforge.k8s.jobs.make_run_job`; its runner
  reports over HTTP (``POST api/runner/<run>``).

Killing a slot kills the run's kernel and anything the notebook started: the control
group (local, as root), the session (local, without root), or the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..forkserver import Forkserver
from ..profiles.resolve import ResolvedProfile
from ..spawners.cgroups import CgroupManager
from ..spawners.local import ensure_system_account, system_user_name

log = logging.getLogger("hubforge.jobs")

#: Largest message a runner may send: an output notebook (``max_notebook_mb``, 20 MiB by
#: default) with room for JSON escaping. A longer line ends the run as failed.
MAX_MESSAGE = 64 * 2**20
#: The most of a run's output (runner, kernel, cell outputs) kept in its log.
MAX_LOG = 20 * 2**20
_slot_numbers = itertools.count(1)


@dataclass
class Slot:
    """A started runner: its channel, its log file, and how to kill it."""

    key: tuple
    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    log_path: Path
    kill_hook: object
    started: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    pid: int | None = None
    tasks: list = field(default_factory=list)
    killed: bool = False
    on_kill: object = None

    def __hash__(self) -> int:
        return id(self)

    async def receive(self) -> dict | None:
        """The runner's next message; None when it closed the channel (it exited)."""
        line = await self.reader.readline()
        if not line:
            return None
        if len(line) > 2**20:  # an output notebook: parse it off the event loop
            return await asyncio.to_thread(json.loads, line)
        return json.loads(line)

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the runner's ``ready`` (its kernel answers); RuntimeError otherwise."""
        message = await asyncio.wait_for(self.receive(), timeout)
        if message is None:
            raise RuntimeError("the runner exited before its kernel was ready; see the run's log")
        if message.get("event") != "ready":
            raise RuntimeError(message.get("reason") or f"unexpected message from the runner: {message.get('event')}")
        self.ready_at = time.monotonic()
        self.pid = message.get("pid")

    async def send(self, message: dict) -> None:
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await self.writer.drain()

    async def kill(self) -> None:
        """Kill the runner, its kernel and everything they started; close the channel."""
        if self.killed:
            return
        self.killed = True
        if self.on_kill is not None:
            self.on_kill(self)
        with contextlib.suppress(Exception):
            self.writer.close()
        try:
            await self.kill_hook()
        finally:
            for task in self.tasks:
                task.cancel()


class Executor:
    """Starts runners. Subclasses implement `start_slot`; `sweep` removes leftovers of a
    previous service process (called once at start)."""

    def __init__(self, jobs_dir: Path):
        self.jobs_dir = jobs_dir
        self.live: set[Slot] = set()
        self.slot_dir = jobs_dir / "slots"
        self.slot_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.slot_dir, 0o700)

    def new_log(self) -> tuple[int, Path]:
        number = next(_slot_numbers)
        path = self.slot_dir / f"slot-{os.getpid()}-{number}.log"
        return number, path

    async def start_slot(self, owner: str, profile: ResolvedProfile, kernel: str) -> Slot:
        raise RuntimeError(f"{type(self).__name__} cannot start runners")

    async def sweep(self) -> None:
        """Remove what a previous service process left behind (nothing by default)."""

    def home_of(self, owner: str) -> str | None:
        """The user's home as runs see it (their working directory's base; None: unknown)."""
        return None

    def watch_root(self, owner: str) -> str | None:
        """The user's home as this service can list it, for watch triggers (None: not here)."""
        return None

    def track(self, slot: Slot) -> Slot:
        """Remember a started runner until it is killed (`aclose` kills what is left)."""
        self.live.add(slot)
        slot.on_kill = self.live.discard
        return slot

    async def aclose(self) -> None:
        """Kill every runner still alive (service stop)."""
        for slot in list(self.live):
            with contextlib.suppress(Exception):
                await slot.kill()


async def _pump_log(stream: asyncio.StreamReader, path: Path) -> None:
    """Copy a runner's output into its log file (mode 0600) until it closes, keeping the
    first `MAX_LOG` bytes: a notebook printing in a loop must not fill the disk."""
    written = 0
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab", buffering=0) as f:
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                return
            if written < MAX_LOG:
                chunk = chunk[: MAX_LOG - written]
                written += len(chunk)
                f.write(chunk)
                if written >= MAX_LOG:
                    f.write(b"\n[hubforge: the log is truncated here, at %d MiB; the run goes on]\n" % (MAX_LOG >> 20))


class LocalExecutor(Executor):
    """Runners as forks of the service's forkserver, as the user's system account."""

    def __init__(self, jobs_dir: Path, *, isolation: str, system_user_prefix: str = "hf-",
                 home_root: str = "/home", shared_home_root: str = "", use_cgroups: bool = True,
                 cgroup_parent: str = "hubforge-jobs"):
        super().__init__(jobs_dir)
        from .runner import PRELOAD

        self.isolation = isolation
        self.system_user_prefix = system_user_prefix
        self.home_root = home_root
        self.shared_home_root = shared_home_root or str(jobs_dir / "homes")
        self.cgroups = CgroupManager(parent=cgroup_parent)
        self.use_cgroups = use_cgroups and self.cgroups.available
        self.forkserver = Forkserver(PRELOAD + ["hubforge.jobs._preload"])
        self._account_locks: dict[str, asyncio.Lock] = {}

    def warm(self) -> None:
        self.forkserver.warm()

    def home_of(self, owner: str) -> str:
        if self.isolation == "system-users":
            return os.path.join(self.home_root, system_user_name(self.system_user_prefix, owner))
        import re

        return os.path.join(self.shared_home_root, re.sub(r"[^A-Za-z0-9._-]", "_", owner))

    def watch_root(self, owner: str) -> str:
        return self.home_of(owner)

    async def _account(self, owner: str) -> tuple[tuple | None, str, dict]:
        """``(run_as, home, base environment)`` for the user's runners."""
        home = self.home_of(owner)
        path = os.path.dirname(os.path.realpath(os.sys.executable)) + os.pathsep + os.environ.get("PATH", os.defpath)
        env = {"PATH": path, "LANG": os.environ.get("LANG", "C.UTF-8"), "HOME": home,
               "JUPYTERHUB_USER": owner, "PYTHONUNBUFFERED": "1"}
        if self.isolation == "system-users":
            account = system_user_name(self.system_user_prefix, owner)
            # One at a time per user: warm runners start together, and concurrent useradds
            # for one account race on its home directory.
            async with self._account_locks.setdefault(owner, asyncio.Lock()):
                pw = await ensure_system_account(account, home, owner)
            env["USER"] = account
            return (pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(account, pw.pw_gid))), pw.pw_dir, env
        os.makedirs(home, mode=0o700, exist_ok=True)
        env["USER"] = owner
        return None, home, env

    async def start_slot(self, owner: str, profile: ResolvedProfile, kernel: str) -> Slot:
        from .runner import forked_main

        run_as, home, env = await self._account(owner)
        env.update(profile.environment or {})
        number, log_path = self.new_log()
        key = f"slot-{os.getpid()}-{number}"
        groups: list[str] = []
        if self.use_cgroups:
            groups = await asyncio.to_thread(
                self.cgroups.create, key, profile.cpu_limit, profile.cpu_guarantee, profile.mem_limit, profile.mem_guarantee,
            )
        parent_channel, child_channel = socket.socketpair()
        parent_log, child_log = socket.socketpair()
        try:
            # Shielded: a fork cancelled half-way would leave a runner nobody knows about.
            pid = await asyncio.shield(asyncio.to_thread(
                self.forkserver.fork, forked_main,
                (child_channel, child_log, kernel, run_as, groups, home, env), f"hubforge-run-{number}", True,
            ))
        except BaseException:
            for s in (parent_channel, child_channel, parent_log, child_log):
                s.close()
            if groups:
                await asyncio.to_thread(self.cgroups.kill_and_remove, groups)
            raise
        child_channel.close()
        child_log.close()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent_channel, limit=MAX_MESSAGE)
            log_reader, log_writer = await asyncio.open_unix_connection(sock=parent_log)
        except BaseException:  # cancelled: the runner must not outlive this
            if groups:
                await asyncio.shield(asyncio.to_thread(self.cgroups.kill_and_remove, groups))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            raise

        async def kill():
            log_writer.close()
            if groups:
                left = await asyncio.to_thread(self.cgroups.kill_and_remove, groups)
                if left:
                    log.warning("%s: processes %s survived SIGKILL", key, sorted(left))
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            self.forkserver.reap()

        slot = Slot(key=(owner, profile.slug, kernel), number=number, reader=reader, writer=writer,
                    log_path=log_path, kill_hook=kill, pid=pid)
        slot.tasks.append(asyncio.create_task(_pump_log(log_reader, log_path)))
        return self.track(slot)

    async def sweep(self) -> None:
        """Kill and remove the control groups of runners of a previous service process."""
        if not self.use_cgroups:
            return
        base = self.cgroups.root / self.cgroups.parent if self.cgroups.version == 2 else self.cgroups.root / "memory" / self.cgroups.parent
        if not base.is_dir():
            return
        for group in base.iterdir():
            if not (group.is_dir() and group.name.startswith("slot-")):
                continue
            owner_pid = group.name.split("-")[1]
            if owner_pid.isdigit() and _alive(int(owner_pid)):
                continue  # ours, or another live jobs service's (a second hub on this machine)
            left = await asyncio.to_thread(self.cgroups.kill_and_remove, [str(p) for p in self.cgroups.paths(group.name)])
            log.info("removed %s, left by a previous jobs service%s", group.name, f" ({sorted(left)} survived)" if left else "")


class ContainerExecutor(Executor):
    """Runners as ``podman run -i --rm`` containers of the profile's image."""

    def __init__(self, jobs_dir: Path, *, engine: str = "podman", home_volume_template: str = "hubforge-home-{username}",
                 home_mount: str = "/home/jovyan", environ: dict | None = None):
        super().__init__(jobs_dir)
        self.engine = engine
        self.home_volume_template = home_volume_template
        self.home_mount = home_mount
        self.environ = environ

    def home_of(self, owner: str) -> str:
        return self.home_mount

    def watch_root(self, owner: str) -> str | None:
        """The home volume's directory on this machine (``podman volume inspect``), which
        the service lists as root, without following links; None before the volume exists."""
        import subprocess

        from ..spawners.container_objects import home_volume_name

        volume = home_volume_name(owner, self.home_volume_template)
        try:
            out = subprocess.run([self.engine, "volume", "inspect", "--format", "{{.Mountpoint}}", volume],
                                 capture_output=True, text=True, timeout=30, env=self.environ)
        except (OSError, subprocess.TimeoutExpired):
            return None
        path = out.stdout.strip()
        return path if out.returncode == 0 and path.startswith("/") else None

    def command(self, owner: str, profile: ResolvedProfile, kernel: str, name: str) -> list[str]:
        """The ``podman run`` command line of a runner (a pure function of its inputs)."""
        from ..spawners.container_objects import home_volume_name

        volume = home_volume_name(owner, self.home_volume_template)
        cmd = [
            self.engine, "run", "-i", "--rm", "--name", name, "--network", "host",
            "--label", "hubforge.jobs=runner", "--label", f"hubforge.jobs.service={os.getpid()}",
            "--volume", f"{volume}:{self.home_mount}", "--workdir", self.home_mount,
            "--env", f"HOME={self.home_mount}", "--env", f"JUPYTERHUB_USER={owner}",
        ]
        if profile.cpu_limit:
            cmd += ["--cpus", f"{profile.cpu_limit:g}"]
        if profile.mem_limit:
            cmd += ["--memory", str(profile.mem_limit)]
        for name_, value in sorted((profile.environment or {}).items()):
            cmd += ["--env", f"{name_}={value}"]
        cmd += [profile.image or "hubforge/cpu:latest", "python", "-m", "hubforge.jobs.runner", "--kernel", kernel]
        return cmd

    async def start_slot(self, owner: str, profile: ResolvedProfile, kernel: str) -> Slot:
        number, log_path = self.new_log()
        name = f"hubforge-run-{os.getpid()}-{number}"
        proc = await asyncio.create_subprocess_exec(
            *self.command(owner, profile, kernel, name), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=MAX_MESSAGE, env=self.environ,
        )

        async def kill():
            rm = await asyncio.create_subprocess_exec(
                self.engine, "rm", "--force", "--time", "0", name,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=self.environ,
            )
            await rm.wait()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

        slot = Slot(key=(owner, profile.slug, kernel), number=number, reader=proc.stdout,
                    writer=proc.stdin, log_path=log_path, kill_hook=kill, pid=proc.pid)
        slot.tasks.append(asyncio.create_task(_pump_log(proc.stderr, log_path)))
        return self.track(slot)

    async def sweep(self) -> None:
        """Remove runner containers of a previous service process (by label)."""
        if not shutil.which(self.engine):
            return
        ps = await asyncio.create_subprocess_exec(
            self.engine, "ps", "-a", "--filter", "label=hubforge.jobs=runner", "--format", "{{.Names}} {{.Labels}}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=self.environ,
        )
        out, _ = await ps.communicate()
        for line in out.decode().splitlines():
            name = line.split(" ", 1)[0]
            service = line.split("hubforge.jobs.service:", 1)[1].split()[0].strip("],") if "hubforge.jobs.service:" in line else ""
            if service.isdigit() and _alive(int(service)):
                continue  # ours, or another live jobs service's
            if name:
                rm = await asyncio.create_subprocess_exec(self.engine, "rm", "--force", "--time", "0", name,
                                                          stdout=asyncio.subprocess.DEVNULL,
                                                          stderr=asyncio.subprocess.DEVNULL, env=self.environ)
                await rm.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def account_exists(prefix: str, owner: str) -> bool:
    try:
        pwd.getpwnam(system_user_name(prefix, owner))
    except KeyError:
        return False
    return True
