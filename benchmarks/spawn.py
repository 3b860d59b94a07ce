"""Spawn latency: HubForge's local spawner against stock JupyterHub, in one run.

Two hubs run side by side on this machine, each with its own configurable-http-proxy on
random loopback ports:

* **hubforge**: HubForge's real hub config (``hub_config/jupyterhub_config.py``) with its
  ``LocalSpawner``, as it runs by default as root: ``system-users`` isolation (system
  user ``hfb-hfbench``) and a cgroup per server, profile ``cpu-small``;
* **plain**: JupyterHub with its stock ``LocalProcessSpawner`` running the same
  ``jupyterhub-singleuser`` from the same virtual environment (default_url ``/lab``) as
  the system user ``hfbench``.

Both spawn the default server of the hub user ``hfbench``. One spawn is timed from
sending ``POST /hub/api/users/hfbench/servers/`` until ``GET /hub/api/users/hfbench``
reports the server ready (polled every 50 ms); the server is then stopped and gone
before the next spawn (not timed). JupyterHub answers the POST only once the server is
ready (or after its 10 s ``slow_spawn_timeout``), so the first poll usually sees it.
The hubs alternate in ABBA order (hubforge, plain, plain, hubforge, ...) so machine
noise and order effects fall on both alike, after one untimed warm-up spawn each (the
first HubForge spawn also creates the system user).

The hub logs break each spawn into phases (hub work before the process starts, process
start until jupyter-server listens, until the hub sees it answer, then the proxy route
and the REST round trips); their medians are printed too.

Needs root (system users, cgroups). Everything it creates (hubs, proxies, servers, the
system users ``hfbench`` and ``hfb-hfbench``, temporary directories) is removed on exit,
Ctrl-C and errors included. The last line of output is one JSON object with the figures.

    .venv/bin/python benchmarks/spawn.py --spawns 3
"""

from __future__ import annotations

import argparse
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

    def start(self, timeout: float = 60) -> "PlainHub":
        from hubforge.hub.proxy import ensure_proxy

        ensure_proxy(quiet=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(self.config_file)],
            cwd=self.workdir, env=self.env(), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._up, timeout, what=f"plain hub at {self.url} (log: {self.log_path})")
        return self


class Target:
    """One hub under test: how to spawn on it, and its timings."""

    def __init__(self, name: str, hub: HubProcess, token: str, body: dict):
        self.name, self.hub, self.token, self.body = name, hub, token, body
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
        phases = parse_phases(self._log_since(offset), elapsed)
        return elapsed, phases

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


# --- phases from the hub log ------------------------------------------------------------

# The hub logs "[L YYYY-MM-DD HH:MM:SS.mmm JupyterHub module:line] ...", the server
# "[L YYYY-MM-DD HH:MM:SS.mmm ServerApp] ..." (no module).
_LOG_LINE = re.compile(r"^\[(\w) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ([^\s\]]+)[^\]]*\] (.*)$")
_TOOK = re.compile(r"User \S+ took ([\d.]+) seconds to start")
PHASES = {
    "hub_before_process_s": "hub work before the process starts (options, user, home, cgroup)",
    "process_to_first_log_s": "process start until the server's first log line (Python imports)",
    "first_log_to_listening_s": "first log line until jupyter-server listens (extensions, JupyterLab)",
    "listening_to_hub_ready_s": "until the hub's HTTP check sees it answer (backoff polling)",
    "proxy_and_rest_s": "proxy route, REST round trips and the 50 ms poll",
}


def parse_phases(log: str, elapsed: float) -> dict:
    """Split one spawn into PHASES from the log lines it wrote; {} if a mark is missing."""
    spawning = first = listening = took_at = took = None
    for line in log.splitlines():
        m = _LOG_LINE.match(line)
        if not m:
            continue
        ts = datetime.strptime(m.group(2), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        name, message = m.group(3), m.group(4)
        if name == "JupyterHub" and message.startswith("Spawning ") and spawning is None:
            spawning = ts
        elif name != "JupyterHub" and spawning is not None and first is None:
            first = ts
        if "is running at" in message and listening is None:
            listening = ts
        if (t := _TOOK.search(message)) and took is None:
            took_at, took = ts, float(t.group(1))
    if None in (spawning, first, listening, took):
        return {}
    return {
        "hub_before_process_s": spawning - (took_at - took),
        "process_to_first_log_s": first - spawning,
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
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


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
    for name in ("hubforge", "plain"):
        if (work / name / "hub.log").exists():
            shutil.copy(work / name / "hub.log", dest / f"{name}-hub.log")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --- the run ----------------------------------------------------------------------------

def run(args, cleanup: list) -> dict:
    homes = tempfile.mkdtemp(prefix="hubforge-bench-homes-")
    os.chmod(homes, 0o755)
    cleanup.append(lambda: shutil.rmtree(homes, ignore_errors=True))
    work = Path(tempfile.mkdtemp(prefix="hubforge-bench-"))
    cleanup.append(lambda: shutil.rmtree(work, ignore_errors=True))
    if args.keep_logs:
        cleanup.append(lambda: _copy_logs(work, Path(args.keep_logs)))

    # The plain hub's user: JupyterHub's LocalProcessSpawner runs the server as the
    # system user named like the hub user, in that user's home.
    subprocess.run(["useradd", "--create-home", "--home-dir", f"{homes}/{USER}", "--shell", "/bin/bash",
                    "--user-group", "--comment", "HubForge spawn benchmark", USER],
                   check=True, capture_output=True, timeout=30)
    cleanup.append(lambda: remove_user(USER))
    cleanup.append(lambda: remove_user(HF_PREFIX + USER))

    print("starting hubs ...", file=sys.stderr)
    hf_hub = HubProcess(work / "hubforge", prefix="/", local={"system_user_prefix": HF_PREFIX, "home_root": homes})
    cleanup.append(hf_hub.stop)
    hf_hub.start()
    r = Browserless(hf_hub).signup("admin", ADMIN_PASSWORD)
    r.raise_for_status()
    hf_token = hf_hub.token("admin")
    r = hf_hub.request("POST", f"/users/{USER}", hf_token)
    if r.status_code != 201:
        raise RuntimeError(f"hubforge: creating {USER} answered {r.status_code}: {r.text[:500]}")

    plain_token = secrets.token_hex(32)
    plain_hub = PlainHub(work / "plain", plain_token)
    cleanup.append(plain_hub.stop)
    plain_hub.start()
    r = plain_hub.request("POST", f"/users/{USER}", plain_token)
    if r.status_code not in (201, 409):  # 409: allowed_users already made it
        raise RuntimeError(f"plain: creating {USER} answered {r.status_code}: {r.text[:500]}")

    hubforge = Target("hubforge", hf_hub, hf_token, {"profile": "cpu-small"})
    plain = Target("plain", plain_hub, plain_token, {})
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
        print(f"[{target.name:8} {label}] {elapsed:6.2f} s  {detail}", file=sys.stderr)

    load_before = load_1m()
    for i in range(args.warmup):
        one(hubforge, f"warm-up {i + 1}", record=False)
        one(plain, f"warm-up {i + 1}", record=False)
    for i in range(args.spawns):
        # ABBA: each hub goes first in every other round.
        pair = (hubforge, plain) if i % 2 == 0 else (plain, hubforge)
        for target in pair:
            one(target, f"{i + 1:3}/{args.spawns}", record=True)
    return {"hubforge": hubforge, "plain": plain, "load_before": load_before, "load_after": load_1m()}


def report(args, res: dict) -> dict:
    hubforge, plain = res["hubforge"], res["plain"]
    fig = {"spawns": args.spawns}
    for t in (hubforge, plain):
        fig[f"{t.name}_p50_s"] = round(percentile(t.times, 50), 3)
        fig[f"{t.name}_p95_s"] = round(percentile(t.times, 95), 3)
    fig["ratio_p50"] = round(fig["hubforge_p50_s"] / fig["plain_p50_s"], 3)
    fig["ratio_p95"] = round(fig["hubforge_p95_s"] / fig["plain_p95_s"], 3)

    print(f"\nSpawn to ready, {args.spawns} spawns each "
          f"(ABBA-interleaved, {args.warmup} untimed warm-up each):")
    print(f"  {'':10} {'p50':>8} {'p95':>8} {'min':>8} {'max':>8}")
    for t in (hubforge, plain):
        print(f"  {t.name:10} {fig[t.name + '_p50_s']:7.2f}s {fig[t.name + '_p95_s']:7.2f}s "
              f"{min(t.times):7.2f}s {max(t.times):7.2f}s")
    print(f"  {'ratio':10} {fig['ratio_p50']:7.2f}x {fig['ratio_p95']:7.2f}x   (hubforge / plain)")
    if hubforge.warmup:
        print(f"  first spawn (warm-up): hubforge {hubforge.warmup[0]:.2f}s, plain {plain.warmup[0]:.2f}s")

    print("\nWhere the time goes (median seconds per phase, from the hub logs):")
    print(f"  {'':68} {'hubforge':>9} {'plain':>9}")
    for key, what in PHASES.items():
        cells = []
        for t in (hubforge, plain):
            vals = [p[key] for p in t.phases]
            cells.append(f"{statistics.median(vals):9.3f}" if vals else f"{'-':>9}")
        print(f"  {what:68} {' '.join(cells)}")
    # The hub's backoff wait is JupyterHub's, random (full jitter) and up to 5 s; without
    # it the comparison shows what the spawners themselves cost.
    for t in (hubforge, plain):
        net = [sum(p.values()) - p["listening_to_hub_ready_s"] for p in t.phases]
        if net:
            fig[f"{t.name}_p50_without_hub_wait_s"] = round(percentile(net, 50), 3)
    if "hubforge_p50_without_hub_wait_s" in fig and "plain_p50_without_hub_wait_s" in fig:
        print(f"  {'without the hub wait (p50)':68} {fig['hubforge_p50_without_hub_wait_s']:9.3f} "
              f"{fig['plain_p50_without_hub_wait_s']:9.3f}")
    print(f"\n  load average (1 min): {res['load_before']:.2f} before, {res['load_after']:.2f} after")

    fig["machine"] = machine()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Time spawn-to-ready for HubForge's LocalSpawner and stock JupyterHub's "
                    "LocalProcessSpawner, side by side, and print p50/p95 and their ratio. "
                    "Needs root; the last output line is a JSON object with the figures.",
    )
    parser.add_argument("--spawns", type=int, default=20,
                        help=f"timed spawns per hub (default 20, at most {MAX_SPAWNS})")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed spawns per hub before timing (default 1)")
    parser.add_argument("--max-minutes", type=float, default=30,
                        help="give up (and clean up) after this many minutes (default 30)")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy both hubs' logs (hub, proxy and servers) into DIR")
    args = parser.parse_args(argv)
    if not 1 <= args.spawns <= MAX_SPAWNS:
        parser.error(f"--spawns must be between 1 and {MAX_SPAWNS}")
    if not 0 <= args.warmup <= 5:
        parser.error("--warmup must be between 0 and 5")
    if os.geteuid() != 0:
        parser.error("needs root: both hubs run servers as system users (and HubForge uses cgroups)")
    for name in (USER, HF_PREFIX + USER):
        if user_exists(name):
            parser.error(f"system user {name} already exists (left by an earlier run?); "
                         f"remove it with: userdel --remove {name}")

    signal.signal(signal.SIGTERM, _raise_interrupt)
    cleanup: list = []
    try:
        res = run(args, cleanup)
    except (Exception, KeyboardInterrupt) as e:
        print(f"benchmark aborted: {e!r}", file=sys.stderr)
        return 1
    finally:
        # Stop the hubs first (they stop their servers and proxies), then remove the
        # users and directories; each step runs even if an earlier one fails.
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


if __name__ == "__main__":
    sys.exit(main())
