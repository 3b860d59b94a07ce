"""Spawn latency: HubForge's local and container spawners against stock JupyterHub, in one run.

Three hubs run side by side on this machine, each with its own proxy (HubForge's default,
traefik; stock JupyterHub's, configurable-http-proxy) on random loopback ports
(``--modes`` picks which; default all three):

* **hubforge** (``local``): HubForge's real hub config (``hub_config/jupyterhub_config.py``)
  with its ``LocalSpawner``, as it runs by default as root: ``system-users`` isolation
  (system user ``hfb-hfbench``) and a cgroup per server, profile ``cpu-small``;
* **plain**: JupyterHub with its stock ``LocalProcessSpawner`` running the same
  ``jupyterhub-singleuser`` from the same virtual environment (default_url ``/lab``) as
  the system user ``hfbench``;
* **containers**: HubForge's real hub config in ``mode: containers`` on podman
  (``gpus: none``, ``pull_policy: never``), profile ``cpu-small``: each server is a
  container (``hubforge-hfbench``) from the CPU image ``hubforge/cpu:2026.11`` with the
  home volume ``hubforge-home-hfbench``. The image is built first if it is missing or out
  of date (``build_base`` + ``build_image``, as the tests do; a no-op when up to date).
  Skipped, with the reason printed, when podman is not installed.

Every hub spawns the default server of the hub user ``hfbench``. One spawn is timed from
sending ``POST /hub/api/users/hfbench/servers/`` until ``GET /hub/api/users/hfbench``
reports the server ready (polled every 50 ms); the server is then stopped and gone
before the next spawn (not timed). JupyterHub answers the POST only once the server is
ready (or after its 10 s ``slow_spawn_timeout``), so the first poll usually sees it.
The hubs alternate in mirrored order (A B C C B A ...) so machine noise and order
effects fall on all alike, after one untimed warm-up spawn each (the first HubForge
spawn also creates the system user, the first container spawn the home volume).

The hub logs (and, for containers, the container's log from ``podman logs --timestamps``
read after each timed spawn) break each spawn into phases (hub work before the process
starts, creating and starting the container, process start until jupyter-server
listens, until the hub sees it answer, then the proxy route and the REST round trips);
their medians are printed too.

Needs root (system users, cgroups, rootful podman). Everything it creates (hubs,
proxies, podman services, servers, the containers ``hubforge-hfbench*`` and the volume
``hubforge-home-hfbench``, the system users ``hfbench`` and ``hfb-hfbench``, temporary
directories) is removed on exit, Ctrl-C and errors included. The last line of output is
one JSON object with the figures.

    .venv/bin/python benchmarks/spawn.py --spawns 3
    .venv/bin/python benchmarks/spawn.py --modes local,plain   # without podman
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HUBFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from hubprocess import VENV_BIN, Browserless, HubProcess, wait_for  # noqa: E402

USER = "hfbench"
HF_PREFIX = "hfb-"
ADMIN_PASSWORD = "bench-horse-battery-9"
POLL_S = 0.05
SPAWN_TIMEOUT_S = 120
MAX_SPAWNS = 200
MODES = ("local", "plain", "containers")
#: DockerSpawner's name for USER's default server (prefix "hubforge"), and the home volume.
CONTAINER = f"hubforge-{USER}"
VOLUME = f"hubforge-home-{USER}"

PLAIN_CONFIG = """\
# Stock JupyterHub for benchmarks/spawn.py: LocalProcessSpawner, the default authenticator,
# and one service token allowed to manage users and servers.
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = {bind_url!r}
c.JupyterHub.hub_bind_url = {hub_bind_url!r}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_secret_file!r}
c.JupyterHub.pid_file = {pid_file!r}
c.ConfigurableHTTPProxy.command = {proxy_command!r}
c.ConfigurableHTTPProxy.api_url = {proxy_api_url!r}
c.ConfigurableHTTPProxy.pid_file = {proxy_pid_file!r}
c.Authenticator.allowed_users = {{{user!r}}}
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "bench", "scopes": ["admin:users", "admin:servers"], "services": ["bench"]}},
]
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
"""


class PlainHub(HubProcess):
    """Stock JupyterHub on ports and paths chosen as HubProcess chooses them.

    Reuses HubProcess's start/stop/request helpers; the HubForge settings file that
    HubProcess writes is not read by this hub.
    """

    def __init__(self, workdir: Path, token: str):
        from hubforge.hub.proxy import proxy_command

        super().__init__(workdir, prefix="/")
        data = Path(self.settings["data_dir"])
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.config_file = self.workdir / "jupyterhub_config.py"
        self.config_file.write_text(PLAIN_CONFIG.format(
            bind_url=self.settings["bind_url"],
            hub_bind_url=self.settings["hub_bind_url"],
            db_url=f"sqlite:///{data / 'jupyterhub.sqlite'}",
            cookie_secret_file=str(data / "jupyterhub_cookie_secret"),
            pid_file=str(data / "jupyterhub.pid"),
            proxy_command=proxy_command(),
            proxy_api_url=f"http://127.0.0.1:{self.settings['proxy_api_port']}",
            proxy_pid_file=str(data / "proxy.pid"),
            user=USER,
            token=token,
            singleuser=str(VENV_BIN / "jupyterhub-singleuser"),
        ))
        os.chmod(self.config_file, 0o600)

    def env(self) -> dict:
        env = super().env()
        env.pop("HUBFORGE_SETTINGS", None)
        return env

    #: stock JupyterHub's default proxy
    proxy = "configurable-http-proxy"

    def command(self) -> list[str]:
        return [str(VENV_BIN / "jupyterhub"), "-f", str(self.config_file)]


class Target:
    """One hub under test: how to spawn on it, and its timings."""

    def __init__(self, name: str, label: str, hub: HubProcess, token: str, body: dict):
        self.name, self.label, self.hub, self.token, self.body = name, label, hub, token, body
        self.times: list[float] = []
        self.phases: list[dict] = []
        self.warmup: list[float] = []

    def spawn(self) -> tuple[float, dict]:
        """Spawn the default server; seconds until the REST API says ready, and the phases."""
        offset = self.hub.log_path.stat().st_size
        t0 = time.perf_counter()
        r = self.hub.request("POST", f"/users/{USER}/servers/", self.token, json=self.body,
                             timeout=SPAWN_TIMEOUT_S)
        if r.status_code not in (201, 202):
            raise RuntimeError(f"{self.name}: spawn answered {r.status_code}: {r.text[:500]}")
        while True:
            server = self._server()
            if server and server.get("ready"):
                elapsed = time.perf_counter() - t0
                break
            if server is None:
                raise RuntimeError(f"{self.name}: spawn failed; hub log tail:\n{self._log_tail(offset)}")
            if time.perf_counter() - t0 > SPAWN_TIMEOUT_S:
                raise TimeoutError(f"{self.name}: not ready after {SPAWN_TIMEOUT_S}s")
            time.sleep(POLL_S)
        # Not timed: the server is ready; read what the phases need before stopping it.
        return elapsed, self.parse(self._log_since(offset), elapsed)

    def parse(self, hub_log: str, elapsed: float) -> dict:
        return parse_phases(hub_log, elapsed)

    def stop(self) -> None:
        r = self.hub.request("DELETE", f"/users/{USER}/servers/", self.token)
        if r.status_code not in (202, 204):
            raise RuntimeError(f"{self.name}: stop answered {r.status_code}: {r.text[:500]}")
        wait_for(lambda: self._server() is None, 60, interval=POLL_S, what=f"{self.name} server gone")

    def _server(self) -> dict | None:
        r = self.hub.request("GET", f"/users/{USER}", self.token, timeout=10)
        r.raise_for_status()
        return r.json().get("servers", {}).get("")

    def _log_since(self, offset: int) -> str:
        with open(self.hub.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def _log_tail(self, offset: int) -> str:
        return "\n".join(self._log_since(offset).splitlines()[-40:])


class ContainerTarget(Target):
    """The containers hub: the server's own log lines are in the container's log, not the hub's."""

    def parse(self, hub_log: str, elapsed: float) -> dict:
        r = podman("logs", "--timestamps", CONTAINER)
        with open(self.hub.workdir / "containers.log", "a") as f:  # kept by --keep-logs
            f.write(f"--- podman logs --timestamps {CONTAINER} (status {r.returncode})\n{r.stdout}{r.stderr}")
        if r.returncode != 0:
            return {}
        return parse_container_phases(hub_log, r.stdout + r.stderr, elapsed)


# --- podman -----------------------------------------------------------------------------

def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run podman as HubForge does (its containers.conf), capturing the output."""
    from hubforge.podman import podman_env

    return subprocess.run(["podman", *args], capture_output=True, text=True, env=podman_env(),
                          timeout=timeout)


def bench_containers() -> list[str]:
    """This benchmark's containers: the default server's and any named server's."""
    names = podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    return [n for n in names if n == CONTAINER or n.startswith(CONTAINER + "-")]


def bench_volume_exists() -> bool:
    return VOLUME in podman("volume", "ls", "--format", "{{.Name}}").stdout.split()


def remove_containers_and_volume() -> None:
    for name in bench_containers():
        r = podman("rm", "--force", "--time", "0", name)
        if r.returncode != 0:
            print(f"warning: could not remove container {name}: {r.stderr.strip()}", file=sys.stderr)
    if bench_volume_exists():
        r = podman("volume", "rm", "--force", VOLUME)
        if r.returncode != 0:
            print(f"warning: could not remove volume {VOLUME}: {r.stderr.strip()}", file=sys.stderr)


def kill_processes_mentioning(text: str) -> None:
    """SIGKILL processes whose command line holds `text` (a podman service a crashed hub left)."""
    needle = text.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def ensure_cpu_image() -> str:
    """Build the local Debian base and the CPU image unless present and up to date.

    As the tests' ``cpu_image`` fixture does; a no-op (a few inspects and a hash) when up
    to date. The builders' output (theirs and podman's) goes to stderr, keeping stdout
    for the figures.
    """
    import logging

    from hubforge.images import get_image
    from hubforge.images.base import LOCAL_BASE_IMAGE, build_base
    from hubforge.images.build import build_image

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="  images: %(message)s")
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        build_base(engine="podman")
        result = build_image("cpu", engine="podman", base_image=LOCAL_BASE_IMAGE)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    return result.tag or get_image("cpu").tag()


# --- phases from the hub log ------------------------------------------------------------

# The hub logs "[L YYYY-MM-DD HH:MM:SS.mmm JupyterHub module:line] ...", the server
# "[L YYYY-MM-DD HH:MM:SS.mmm ServerApp] ..." (no module).
_LOG_LINE = re.compile(r"^\[(\w) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ([^\s\]]+)[^\]]*\] (.*)$")
_TOOK = re.compile(r"User \S+ took ([\d.]+) seconds to start")
# `podman logs --timestamps` puts conmon's RFC 3339 time (nanoseconds, with zone) first.
_PODMAN_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d) (.*)$")
PHASES = {
    "hub_before_process_s": "hub work before the process starts (options, user, home, cgroup)",
    "create_container_s": "create the container (DockerSpawner: image and name lookups, create)",
    "start_container_s": "start the container (podman/runc start, API round trip)",
    "process_to_first_log_s": "process start until the server's first log line (Python imports)",
    "first_log_to_listening_s": "first log line until jupyter-server listens (extensions, JupyterLab)",
    "listening_to_hub_ready_s": "until the hub's HTTP check sees it answer (backoff polling)",
    "proxy_and_rest_s": "proxy route, REST round trips and the 50 ms poll",
}
#: For containers the first phase is the spawner's own work before it asks podman to
#: create the container: profile, GPU allocation (none), engine socket, image check.


def _hub_lines(log: str):
    for line in log.splitlines():
        m = _LOG_LINE.match(line)
        if m:
            ts = datetime.strptime(m.group(2), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            yield ts, m.group(3), m.group(4)


def _took(log: str) -> tuple[float, float] | tuple[None, None]:
    """When the hub logged "took N seconds to start", and N."""
    for ts, _, message in _hub_lines(log):
        if t := _TOOK.search(message):
            return ts, float(t.group(1))
    return None, None


def parse_phases(log: str, elapsed: float) -> dict:
    """Split one spawn into PHASES from the log lines it wrote; {} if a mark is missing."""
    spawning = first = listening = None
    for ts, name, message in _hub_lines(log):
        if name == "JupyterHub" and message.startswith("Spawning ") and spawning is None:
            spawning = ts
        elif name != "JupyterHub" and spawning is not None and first is None:
            first = ts
        if "is running at" in message and listening is None:
            listening = ts
    took_at, took = _took(log)
    if None in (spawning, first, listening, took):
        return {}
    return {
        "hub_before_process_s": spawning - (took_at - took),
        "process_to_first_log_s": first - spawning,
        "first_log_to_listening_s": listening - first,
        "listening_to_hub_ready_s": took_at - listening,
        "proxy_and_rest_s": elapsed - took,
    }


def _podman_lines(log: str):
    for line in log.splitlines():
        m = _PODMAN_TS.match(line)
        if m:
            frac = (m.group(2) or "0")[:6].ljust(6, "0")
            zone = "+00:00" if m.group(3) == "Z" else m.group(3)
            yield datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}").timestamp(), m.group(4)


def parse_container_phases(hub_log: str, container_log: str, elapsed: float) -> dict:
    """PHASES for a container spawn: marks from the hub log and the container's log."""
    image_checked = created = started = None
    for ts, name, message in _hub_lines(hub_log):
        if name != "JupyterHub":
            continue
        if "Starting container from " in message and image_checked is None:
            image_checked = ts  # ContainerSpawner, before DockerSpawner.start
        elif message.startswith("Created container ") and created is None:
            created = ts  # DockerSpawner, once the create call returned
        elif " started; waiting for JupyterLab" in message and started is None:
            started = ts  # ContainerSpawner, once the start call returned
    first = listening = None
    for ts, message in _podman_lines(container_log):
        if first is None:
            first = ts
        if "is running at" in message and listening is None:
            listening = ts
    took_at, took = _took(hub_log)
    if None in (image_checked, created, started, first, listening, took):
        return {}
    return {
        "hub_before_process_s": image_checked - (took_at - took),
        "create_container_s": created - image_checked,
        "start_container_s": started - created,
        "process_to_first_log_s": first - started,
        "first_log_to_listening_s": listening - first,
        "listening_to_hub_ready_s": took_at - listening,
        "proxy_and_rest_s": elapsed - took,
    }


# --- setup and teardown -----------------------------------------------------------------

def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return (f"nproc {len(os.sched_getaffinity(0))}, {model}, {mem_kb / 2**20:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}")


def load_1m() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def kill_user_processes(uid: int) -> None:
    """SIGKILL whatever still runs as `uid` (a server a crashed hub left behind)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
        except OSError:
            continue
        m = re.search(r"^Uid:\s+(\d+)", status, re.M)
        if m and int(m.group(1)) == uid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def remove_user(name: str) -> None:
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    for _ in range(5):
        kill_user_processes(uid)
        r = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True, timeout=30)
        # 12: the home (outside /home) could not be removed; the temp dir goes anyway.
        if r.returncode in (0, 12) or not user_exists(name):
            return
        time.sleep(0.5)
    print(f"warning: could not remove system user {name}: {r.stderr.strip()}", file=sys.stderr)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _copy_logs(work: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("hubforge", "plain", "containers"):
        if (work / name / "hub.log").exists():
            shutil.copy(work / name / "hub.log", dest / f"{name}-hub.log")
    if (work / "containers" / "containers.log").exists():
        shutil.copy(work / "containers" / "containers.log", dest / "containers-servers.log")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_with_cleanup(run, args, report) -> int:
    """Run ``run(args, cleanup)``, then undo what it recorded in ``cleanup``.

    The undo steps run in reverse order, each even if an earlier one fails, also after
    an error, Ctrl-C or SIGTERM; on success the report's figures are printed as the
    final single-line JSON object. Shared by every benchmark in this folder.
    """
    signal.signal(signal.SIGTERM, _raise_interrupt)
    cleanup: list = []
    try:
        res = run(args, cleanup)
    except (Exception, KeyboardInterrupt) as e:
        print(f"benchmark aborted: {e!r}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("cleaning up ...", file=sys.stderr)
        for undo in reversed(cleanup):
            try:
                undo()
            except Exception as e:  # keep cleaning up
                print(f"warning: cleanup step failed: {e!r}", file=sys.stderr)
    print(json.dumps(report(args, res)))
    return 0


# --- the run ----------------------------------------------------------------------------

def start_hubforge_hub(workdir: Path, cleanup: list, **settings) -> tuple[HubProcess, str]:
    """A HubForge hub with an admin (signed up) and the hub user USER; returns it and a token."""
    hub = HubProcess(workdir, prefix="/", **settings)
    cleanup.append(hub.stop)
    hub.start()
    r = Browserless(hub).signup("admin", ADMIN_PASSWORD)
    r.raise_for_status()
    token = hub.token("admin")
    r = hub.request("POST", f"/users/{USER}", token)
    if r.status_code != 201:
        raise RuntimeError(f"{workdir.name}: creating {USER} answered {r.status_code}: {r.text[:500]}")
    return hub, token


def run(args, cleanup: list) -> dict:
    modes = args.modes
    homes = tempfile.mkdtemp(prefix="hubforge-bench-homes-")
    os.chmod(homes, 0o755)
    cleanup.append(lambda: shutil.rmtree(homes, ignore_errors=True))
    work = Path(tempfile.mkdtemp(prefix="hubforge-bench-"))
    cleanup.append(lambda: shutil.rmtree(work, ignore_errors=True))
    if args.keep_logs:
        cleanup.append(lambda: _copy_logs(work, Path(args.keep_logs)))

    if "containers" in modes:
        print("checking the CPU image (builds it if missing or out of date) ...", file=sys.stderr)
        t = time.monotonic()
        image = ensure_cpu_image()
        print(f"  {image} ready ({time.monotonic() - t:.1f} s)", file=sys.stderr)

    if "plain" in modes:
        # The plain hub's user: JupyterHub's LocalProcessSpawner runs the server as the
        # system user named like the hub user, in that user's home.
        subprocess.run(["useradd", "--create-home", "--home-dir", f"{homes}/{USER}", "--shell", "/bin/bash",
                        "--user-group", "--comment", "HubForge spawn benchmark", USER],
                       check=True, capture_output=True, timeout=30)
        cleanup.append(lambda: remove_user(USER))
    if "local" in modes:
        cleanup.append(lambda: remove_user(HF_PREFIX + USER))

    print(f"starting hubs ({', '.join(modes)}) ...", file=sys.stderr)
    targets = []
    if "local" in modes:
        hub, token = start_hubforge_hub(work / "hubforge", cleanup,
                                        local={"system_user_prefix": HF_PREFIX, "home_root": homes})
        targets.append(Target("hubforge", "hubforge-local", hub, token, {"profile": "cpu-small"}))
    if "plain" in modes:
        plain_token = secrets.token_hex(32)
        plain_hub = PlainHub(work / "plain", plain_token)
        cleanup.append(plain_hub.stop)
        plain_hub.start()
        r = plain_hub.request("POST", f"/users/{USER}", plain_token)
        if r.status_code not in (201, 409):  # 409: allowed_users already made it
            raise RuntimeError(f"plain: creating {USER} answered {r.status_code}: {r.text[:500]}")
        targets.append(Target("plain", "plain", plain_hub, plain_token, {}))
    if "containers" in modes:
        # Runs after the hub's stop (cleanup runs in reverse): the hub stops its servers
        # and its podman service; this removes whatever is left, and the home volume.
        socket_path = str(work / "containers" / "data" / "podman.sock")
        cleanup.append(remove_containers_and_volume)
        cleanup.append(lambda: kill_processes_mentioning(socket_path))
        hub, token = start_hubforge_hub(
            work / "containers", cleanup, mode="containers", gpus="none",
            containers={"engine": "podman", "pull_policy": "never"},
        )
        targets.append(ContainerTarget("containers", "containers", hub, token, {"profile": "cpu-small"}))
    deadline = time.monotonic() + args.max_minutes * 60

    def one(target: Target, label: str, record: bool) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"--max-minutes {args.max_minutes} reached")
        elapsed, phases = target.spawn()
        target.stop()
        if record:
            target.times.append(elapsed)
            if phases:
                target.phases.append(phases)
        else:
            target.warmup.append(elapsed)
        detail = " ".join(f"{k.removesuffix('_s')}={v:.2f}" for k, v in phases.items())
        print(f"[{target.name:10} {label}] {elapsed:6.2f} s  {detail}", file=sys.stderr)

    load_before = load_1m()
    for i in range(args.warmup):
        for target in targets:
            one(target, f"warm-up {i + 1}", record=False)
    for i in range(args.spawns):
        # Mirrored rounds (A B C, C B A, ...): each hub is first and last equally often.
        order = targets if i % 2 == 0 else targets[::-1]
        for target in order:
            one(target, f"{i + 1:3}/{args.spawns}", record=True)
    return {"targets": targets, "load_before": load_before, "load_after": load_1m()}


def report(args, res: dict) -> dict:
    targets: list[Target] = res["targets"]
    by_name = {t.name: t for t in targets}
    fig: dict = {"spawns": args.spawns}
    for t in targets:
        fig[f"{t.name}_p50_s"] = round(percentile(t.times, 50), 3)
        fig[f"{t.name}_p95_s"] = round(percentile(t.times, 95), 3)
    ratios = []  # (key suffix, row label)
    if "plain" in by_name:
        for name, prefix in (("hubforge", "ratio"), ("containers", "ratio_containers")):
            if name in by_name:
                for q in ("p50", "p95"):
                    fig[f"{prefix}_{q}"] = round(fig[f"{name}_{q}_s"] / fig[f"plain_{q}_s"], 3)
                ratios.append((prefix, f"{by_name[name].label} / plain"))
    if "hubforge" in by_name and "containers" in by_name:
        for q in ("p50", "p95"):
            fig[f"ratio_containers_local_{q}"] = round(fig[f"containers_{q}_s"] / fig[f"hubforge_{q}_s"], 3)
        ratios.append(("ratio_containers_local", "containers / hubforge-local"))

    order = {1: "one hub", 2: "interleaved A B B A", 3: "interleaved A B C C B A"}[len(targets)]
    print(f"\nSpawn to ready, {args.spawns} spawns each "
          f"({order}, {args.warmup} untimed warm-up each):")
    print(f"  {'':34} {'p50':>8} {'p95':>8} {'min':>8} {'max':>8}")
    for t in targets:
        print(f"  {t.label:34} {fig[t.name + '_p50_s']:7.2f}s {fig[t.name + '_p95_s']:7.2f}s "
              f"{min(t.times):7.2f}s {max(t.times):7.2f}s")
    for prefix, label in ratios:
        print(f"  {'ratio ' + label:34} {fig[prefix + '_p50']:7.2f}x {fig[prefix + '_p95']:7.2f}x")
    if args.warmup:
        print("  first spawn (warm-up): " + ", ".join(f"{t.label} {t.warmup[0]:.2f}s" for t in targets))
    for mode, reason in args.skipped.items():
        print(f"  {mode}: skipped ({reason})")

    print("\nWhere the time goes (median seconds per phase, from the hub and container logs):")
    print(f"  {'':70}" + "".join(f" {t.label:>15}" for t in targets))
    medians: dict = {t.name: {} for t in targets}
    for key, what in PHASES.items():
        if not any(key in p for t in targets for p in t.phases):
            continue  # the container rows, without the containers hub
        cells = []
        for t in targets:
            vals = [p[key] for p in t.phases if key in p]
            if vals:
                medians[t.name][key] = round(statistics.median(vals), 3)
            cells.append(f"{statistics.median(vals):15.3f}" if vals else f"{'-':>15}")
        print(f"  {what:70} {' '.join(cells)}")
    # The hub's backoff wait is JupyterHub's, random (full jitter) and up to 5 s; without
    # it the comparison shows what the spawners themselves cost.
    cells = []
    for t in targets:
        net = [sum(p.values()) - p["listening_to_hub_ready_s"] for p in t.phases]
        if net:
            fig[f"{t.name}_p50_without_hub_wait_s"] = round(percentile(net, 50), 3)
        cells.append(f"{fig[t.name + '_p50_without_hub_wait_s']:15.3f}" if net else f"{'-':>15}")
    print(f"  {'without the hub wait (p50)':70} {' '.join(cells)}")
    if "containers" in by_name:
        print("  (containers: the first row is the spawner's work before the create call: profile,\n"
              "   engine socket, image check; 'process start' counts from the start call's return)")
    print(f"\n  load average (1 min): {res['load_before']:.2f} before, {res['load_after']:.2f} after")

    fig["phases_p50_s"] = medians
    fig["modes"] = [t.name for t in targets]
    if args.skipped:
        fig["skipped"] = args.skipped
    fig["load_1m_before"], fig["load_1m_after"] = res["load_before"], res["load_after"]
    fig["machine"] = machine()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Time spawn-to-ready for HubForge's LocalSpawner, HubForge's container "
                    "spawner (podman) and stock JupyterHub's LocalProcessSpawner, side by side, "
                    "and print p50/p95 and their ratios. Needs root; the last output line is a "
                    "JSON object with the figures.",
    )
    parser.add_argument("--spawns", type=int, default=20,
                        help=f"timed spawns per hub (default 20, at most {MAX_SPAWNS})")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed spawns per hub before timing (default 1)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated hubs to run, from {', '.join(MODES)} (default all; "
                             "containers is skipped, with a note, when podman is not installed)")
    parser.add_argument("--max-minutes", type=float, default=30,
                        help="give up (and clean up) after this many minutes (default 30)")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy the hubs' logs (hub, proxy and servers; the containers' logs) into DIR")
    args = parser.parse_args(argv)
    if not 1 <= args.spawns <= MAX_SPAWNS:
        parser.error(f"--spawns must be between 1 and {MAX_SPAWNS}")
    if not 0 <= args.warmup <= 5:
        parser.error("--warmup must be between 0 and 5")
    asked = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := sorted(set(asked) - set(MODES)):
        parser.error(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    args.modes = [m for m in MODES if m in asked]
    if not args.modes:
        parser.error("--modes: name at least one of " + ", ".join(MODES))
    args.skipped = {}
    if "containers" in args.modes and shutil.which("podman") is None:
        args.skipped["containers"] = "podman is not installed: apt-get install podman runc debootstrap"
        args.modes.remove("containers")
        print(f"containers: skipped ({args.skipped['containers']})", file=sys.stderr)
        if not args.modes:
            parser.error("nothing to run: " + args.skipped["containers"])
    if os.geteuid() != 0:
        parser.error("needs root: the hubs run servers as system users, HubForge uses cgroups, "
                     "and the containers run on rootful podman")
    for mode, name in (("plain", USER), ("local", HF_PREFIX + USER)):
        if mode in args.modes and user_exists(name):
            parser.error(f"system user {name} already exists (left by an earlier run?); "
                         f"remove it with: userdel --remove {name}")
    if "containers" in args.modes:
        if left := bench_containers():
            parser.error(f"container(s) {', '.join(left)} already exist (left by an earlier run?); "
                         f"remove them with: podman rm --force {' '.join(left)}")
        if bench_volume_exists():
            parser.error(f"volume {VOLUME} already exists (left by an earlier run?); "
                         f"remove it with: podman volume rm {VOLUME}")

    # Cleanup stops the hubs first (they stop their servers, proxies and podman
    # services), then removes containers, volume, users and directories.
    return run_with_cleanup(run, args, report)

if __name__ == "__main__":
    sys.exit(main())
