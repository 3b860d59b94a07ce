"""Dask cluster start-up and a fixed computation: HubForge against dask-gateway and LocalCluster, in one run.

Three systems start the same cluster, four workers of one core (one thread) and 1 GiB
each, on this machine, side by side (``--systems`` picks which; default all three):

* **hubforge**: what a user's script does. A real HubForge hub (HubForge's own
  ``hub_config/jupyterhub_config.py`` through ``tests/hubprocess.py``, with its proxy,
  ``shared`` isolation, ``dask.idle_timeout: 0``) runs its ``dask-gateway`` service; the
  hub user ``bench`` calls ``hubforge.dask.cluster(workers=4, worker_cores=1,
  worker_memory=1, wait=False, check=False)`` with a hub API token and the gateway
  addresses the hub publishes (``GET /hub/api/services/dask-gateway``). Its schedulers
  and workers are forks of a preloaded forkserver, the workers without a nanny, and the
  scheduler asks for the four workers itself at start (see `hubforge.dask.launcher` and
  `hubforge.dask.scheduler_preload`); as root, each cluster also gets a control group;
* **gateway**: stock ``dask-gateway-server`` (same installation) with its local backend
  (``UnsafeLocalBackend``: processes as the current user) and ``SimpleAuthenticator``,
  configured for the same workers (``worker_cores = 1``, ``worker_memory = "1 G"``);
  the client does ``Gateway(...).new_cluster()``, ``cluster.scale(4)``,
  ``cluster.get_client()``. Each scheduler and worker is a new interpreter (``dask
  scheduler``, ``dask worker``: the ``dask-scheduler``/``dask-worker`` scripts the
  server names by default are gone from distributed 2026), each worker with a nanny;
* **local**: ``distributed.LocalCluster(n_workers=4, threads_per_worker=1,
  memory_limit="1GiB", processes=True)`` in this process, then ``Client(cluster)``.
  Its workers are started by nannies in this process with multiprocessing's *spawn*,
  and the constructor returns only once all four are up, so its 1, 2 and 4 worker
  marks are all about the constructor's time: that is how LocalCluster starts.

One round of a system, timed from ``t0`` just before the call that asks for the cluster:

* ``t_client``: the call(s) above have returned a connected ``distributed.Client``
  (HubForge and dask-gateway wait for the scheduler to run; LocalCluster for every
  worker too);
* ``t_first``, ``t_2``, ``t_4``: the scheduler reports 1, 2 and 4 workers running
  (``client.scheduler_info(n_workers=-1)``, a round trip to the scheduler, polled every
  10 ms from ``t_client``);
* ``compute``: ``da.random.random((4000, 4000), chunks=(1000, 1000)).sum().compute()``
  on the warm cluster: run once untimed, then timed ``--compute-repeat`` times (default
  3), the round's figure being their median. The sum is checked to be about 8 million.

Then the cluster is stopped (``hubforge.dask.shutdown``, ``cluster.shutdown()``,
``cluster.close()``), not timed, and the next round starts only once the gateway lists
no cluster and every process the round started (schedulers, workers, nannies) has
exited, so one system's leftovers never compete with the next. The systems alternate in
mirrored order (A B C, C B A, ...) after one untimed warm-up round each, so machine
noise and order effects fall on all alike. The table gives median and p95 over the
rounds and the ratios HubForge / LocalCluster and HubForge / dask-gateway; the issue's
goal is HubForge ready (all 4 workers) within 1.5x LocalCluster's time and computing
within 1.2x of it.

Everything it starts (the hub with its proxy and gateway service, the dask-gateway
server and its proxy, every cluster, temporary directories) is removed on exit, Ctrl-C
and errors included. No root needed. The last line of output is one JSON object with the
figures.

    .venv/bin/python benchmarks/dask.py                      # 5 rounds
    .venv/bin/python benchmarks/dask.py --rounds 1 --systems hubforge,local
"""

# Only the standard library at the top, and all the work under main(): LocalCluster
# starts its workers with multiprocessing's spawn, which runs this file again, as
# `__mp_main__`, in every worker; that must be cheap and must start nothing.

from __future__ import annotations

import abc
import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# Run as a script, this folder is first on sys.path, where this file would shadow the
# `dask` package; take it off (before anything imports dask) and load spawn.py by path.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
os.environ.setdefault("HUBFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

USER = "bench"
ADMIN_PASSWORD = "bench-horse-battery-9"
SYSTEMS = ("hubforge", "gateway", "local")
LABELS = {"hubforge": "HubForge", "gateway": "dask-gateway (local backend)", "local": "LocalCluster"}
WORKERS = 4
MARKS = (1, 2, 4)
METRICS = {
    "t_client": "client connected",
    "t_first": "first worker ready",
    "t_2": "2 workers ready",
    "t_4": "4 workers ready",
    "compute": "sum of a 4000x4000 array",
}
POLL_S = 0.01
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60
MAX_ROUNDS = 100
#: The sum of 16 million uniform [0, 1) numbers: 8 million, give or take about 1,200.
EXPECTED_SUM, SUM_TOLERANCE = 4000 * 4000 / 2, 50_000


def _spawn_helpers():
    """benchmarks/spawn.py's helpers, loaded by path (see the sys.path note above)."""
    import importlib.util

    if "spawn" not in sys.modules:
        spec = importlib.util.spec_from_file_location("spawn", HERE / "spawn.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["spawn"] = module
        spec.loader.exec_module(module)
    return sys.modules["spawn"]


# --- processes --------------------------------------------------------------------------

def descendants(root: int) -> set[int]:
    """Pids of every process below `root` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(proc.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def new_processes(before: set[int]) -> set[int]:
    """Processes below this one that were not there before, but multiprocessing's
    resource tracker (started by the first LocalCluster, it stays for the run)."""
    return {pid for pid in descendants(os.getpid()) - before if "resource_tracker" not in _cmdline(pid)}


def close_gateway(gw) -> None:
    """Close a `dask_gateway.Gateway` once: its ``__del__`` would close it again, and
    print a traceback (as `hubforge.dask` does for its own)."""
    gw.close()
    gw.__dict__.pop("_loop_runner", None)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    from hubprocess import wait_for as _wait_for

    return _wait_for(predicate, timeout, interval=interval, what=what)


# --- the work that is timed -------------------------------------------------------------

def running_workers(client) -> int:
    info = client.scheduler_info(n_workers=-1)
    return sum(1 for w in info["workers"].values() if w.get("status", "running") == "running")


def wait_marks(client, t0: float) -> dict:
    """Seconds from `t0` until the scheduler reports 1, 2 and 4 running workers."""
    marks: dict = {}
    while len(marks) < len(MARKS):
        n = running_workers(client)
        now = time.perf_counter()
        for k in MARKS:
            if n >= k and k not in marks:
                marks[k] = now - t0
        if len(marks) == len(MARKS):
            break
        if now - t0 > READY_TIMEOUT_S:
            raise TimeoutError(f"{n} of {WORKERS} workers running after {READY_TIMEOUT_S} s")
        time.sleep(POLL_S)
    return {"t_first": marks[1], "t_2": marks[2], "t_4": marks[4]}


def compute(client) -> float:
    """The fixed computation, on `client`'s cluster; its result, checked."""
    import dask.array as da

    with client.as_current():
        total = da.random.random((4000, 4000), chunks=(1000, 1000)).sum().compute()
    if abs(total - EXPECTED_SUM) > SUM_TOLERANCE:
        raise RuntimeError(f"the sum came out as {total}, expected about {EXPECTED_SUM:.0f}")
    return total


def time_compute(client, repeat: int) -> float:
    compute(client)  # untimed: the workers' first task imports numpy's random, warms caches
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        compute(client)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# --- the systems --------------------------------------------------------------------------

class System(abc.ABC):
    """One system under test: how to start and stop its cluster, and the figures."""

    name = ""

    def __init__(self):
        self.rounds: list[dict] = []
        self.warmup: list[dict] = []

    @abc.abstractmethod
    def start(self):
        """Ask for the cluster; return (a connected Client, a handle for `stop`)."""

    @abc.abstractmethod
    def stop(self, client, handle) -> None:
        """Stop the cluster and close the client; return once the system lists it no more."""


class HubForgeSystem(System):
    name = "hubforge"

    def __init__(self, gateway_kwargs: dict):
        super().__init__()
        self.kw = gateway_kwargs

    def start(self):
        import hubforge.dask as hdask

        client = hdask.cluster(workers=WORKERS, worker_cores=1, worker_memory=1, wait=False, check=False,
                               gateway_kwargs=self.kw)
        return client, None

    def stop(self, client, handle) -> None:
        import hubforge.dask as hdask

        hdask.shutdown(client, gateway_kwargs=self.kw)
        client.close()
        cluster = client.cluster
        cluster.close()
        cluster.gateway.__dict__.pop("_loop_runner", None)  # closed; see close_gateway
        wait_for(lambda: not hdask.list_clusters(gateway_kwargs=self.kw), STOP_TIMEOUT_S,
                 what="HubForge's gateway to list no cluster")

    def stop_all(self) -> None:
        """Cleanup: whatever cluster an aborted round left running."""
        import hubforge.dask as hdask

        try:
            hdask.shutdown(all=True, gateway_kwargs=self.kw)
        finally:
            # hubforge.dask keeps one Gateway client per configuration for the process's
            # life; close it, or aiohttp warns of an unclosed session at exit (on stderr,
            # after the JSON line).
            close_gateway(hdask.gateway(**self.kw))


class GatewaySystem(System):
    name = "gateway"

    def __init__(self, address: str, proxy_address: str):
        super().__init__()
        self.address, self.proxy_address = address, proxy_address

    def gateway(self):
        from dask_gateway import Gateway
        from dask_gateway.auth import BasicAuth

        return Gateway(address=self.address, proxy_address=self.proxy_address,
                       auth=BasicAuth(USER, "x"))

    def start(self):
        gw = self.gateway()
        cluster = gw.new_cluster()
        cluster.scale(WORKERS)
        return cluster.get_client(), (gw, cluster)

    def stop(self, client, handle) -> None:
        gw, cluster = handle
        cluster.shutdown()  # closes its clients and its own Gateway too
        cluster.gateway.__dict__.pop("_loop_runner", None)  # see close_gateway
        client.close()
        close_gateway(gw)
        self.wait_none_listed()

    def wait_none_listed(self) -> None:
        gw = self.gateway()
        try:
            wait_for(lambda: not gw.list_clusters(), STOP_TIMEOUT_S, what="dask-gateway to list no cluster")
        finally:
            close_gateway(gw)

    def stop_all(self) -> None:
        gw = self.gateway()
        try:
            for report in gw.list_clusters():
                gw.stop_cluster(report.name)
        finally:
            close_gateway(gw)


class LocalSystem(System):
    name = "local"

    def start(self):
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, memory_limit="1GiB",
                               host="127.0.0.1", dashboard_address="127.0.0.1:0", processes=True)
        self.cluster = cluster  # for cleanup, should the round fail
        return Client(cluster), cluster

    def stop(self, client, handle) -> None:
        client.close()
        handle.close()
        self.cluster = None

    def stop_all(self) -> None:
        if getattr(self, "cluster", None) is not None:
            self.cluster.close()


# --- setting the systems up ---------------------------------------------------------------

def start_hubforge(workdir: Path, cleanup: list) -> HubForgeSystem:
    """A HubForge hub, its admin and the user USER; the user's gateway settings."""
    from dask_gateway.auth import JupyterHubAuth
    from hubprocess import Browserless, HubProcess

    hub = HubProcess(workdir, local={"isolation": "shared"}, dask={"idle_timeout": 0})
    cleanup.append(hub.stop)
    hub.start()
    r = Browserless(hub).signup("admin", ADMIN_PASSWORD)
    r.raise_for_status()
    admin_token = hub.token("admin")
    token = hub.make_user(admin_token, USER)
    r = hub.request("GET", "/services/dask-gateway", token)
    if r.status_code != 200:
        raise RuntimeError(f"GET /services/dask-gateway answered {r.status_code}: {r.text[:500]}")
    info = r.json()["info"]
    system = HubForgeSystem({"address": info["address"], "proxy_address": info["proxy_address"],
                             "auth": JupyterHubAuth(api_token=token)})
    cleanup.append(system.stop_all)  # runs before hub.stop
    return system


GATEWAY_CONFIG = """\
# Stock dask-gateway-server for benchmarks/dask.py: local processes as this user.
c = get_config()  # noqa: F821
c.DaskGateway.address = {address!r}
c.Proxy.address = {proxy_address!r}
c.Proxy.tcp_address = {tcp_address!r}
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.LocalBackend.clusters_directory = {clusters!r}
# distributed 2026 installs `dask scheduler` / `dask worker`, not the old dask-scheduler scripts.
c.ClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
c.ClusterConfig.worker_cmd = [{dask!r}, "worker"]
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_memory = "1 G"
c.ClusterConfig.idle_timeout = 0
"""


def start_gateway(workdir: Path, cleanup: list) -> GatewaySystem:
    """``dask-gateway-server`` in a subprocess, on free loopback ports."""
    from hubprocess import VENV_BIN, ProcessExited, free_port

    workdir.mkdir(parents=True)
    (workdir / "clusters").mkdir()
    ports = {k: free_port() for k in ("api", "http", "tcp")}
    config = workdir / "dask_gateway_config.py"
    config.write_text(GATEWAY_CONFIG.format(
        address=f"127.0.0.1:{ports['api']}", proxy_address=f"127.0.0.1:{ports['http']}",
        tcp_address=f"127.0.0.1:{ports['tcp']}", clusters=str(workdir / "clusters"),
        dask=str(VENV_BIN / "dask"),
    ))
    log = open(workdir / "gateway.log", "ab")
    cleanup.append(log.close)
    proc = subprocess.Popen([str(VENV_BIN / "dask-gateway-server"), "--config", str(config)],
                            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cleanup.append(lambda: stop_process_group(proc))
    system = GatewaySystem(f"http://127.0.0.1:{ports['http']}", f"gateway://127.0.0.1:{ports['tcp']}")

    def up() -> bool:
        if proc.poll() is not None:
            raise ProcessExited(f"dask-gateway-server exited with {proc.returncode}; "
                               f"log:\n{(workdir / 'gateway.log').read_text(errors='replace')[-3000:]}")
        system.wait_none_listed()  # answers through its proxy, with auth
        return True

    wait_for(up, 60, what=f"dask-gateway-server (log: {workdir / 'gateway.log'})", interval=0.2)
    cleanup.append(system.stop_all)  # runs before the server stops
    return system


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a process started in its own session (it stops its clusters), then SIGKILL
    its group and whatever it left."""
    import signal

    left = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    for pid in [proc.pid, *left]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(10)


# --- the run ------------------------------------------------------------------------------

def run(args, cleanup: list) -> dict:
    spawn = _spawn_helpers()
    # Imported here, before any timing, so no round pays for them.
    import dask.array  # noqa: F401
    import dask_gateway  # noqa: F401
    import distributed  # noqa: F401
    import hubforge.dask  # noqa: F401

    work = Path(tempfile.mkdtemp(prefix="hubforge-bench-dask-"))
    cleanup.append(lambda: shutil.rmtree(work, ignore_errors=True))
    if args.keep_logs:
        cleanup.append(lambda: copy_logs(work, Path(args.keep_logs)))

    systems: list[System] = []
    for name in args.systems:
        print(f"starting {LABELS[name]} ...", file=sys.stderr)
        if name == "hubforge":
            systems.append(start_hubforge(work / "hubforge", cleanup))
        elif name == "gateway":
            systems.append(start_gateway(work / "gateway", cleanup))
        else:
            system = LocalSystem()
            cleanup.append(system.stop_all)
            systems.append(system)
    deadline = time.monotonic() + args.max_minutes * 60

    def one(system: System, label: str, record: bool) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"--max-minutes {args.max_minutes} reached")
        before = descendants(os.getpid())
        t0 = time.perf_counter()
        client, handle = system.start()
        fig = {"t_client": time.perf_counter() - t0}
        try:
            fig.update(wait_marks(client, t0))
            fig["compute"] = time_compute(client, args.compute_repeat)
        finally:
            system.stop(client, handle)
        wait_for(lambda: not new_processes(before), STOP_TIMEOUT_S, interval=0.1,
                 what=f"{system.name}: the round's schedulers and workers to exit")
        (system.rounds if record else system.warmup).append(fig)
        detail = "  ".join(f"{k} {v:5.2f}s" for k, v in fig.items())
        print(f"[{system.name:8} {label}] {detail}", file=sys.stderr)

    load_before = spawn.load_1m()
    for i in range(args.warmup):
        for system in systems:
            one(system, f"warm-up {i + 1}", record=False)
    for i in range(args.rounds):
        # Mirrored rounds (A B C, C B A, ...): each system is first and last equally often.
        for system in systems if i % 2 == 0 else systems[::-1]:
            one(system, f"{i + 1:3}/{args.rounds}", record=True)
    return {"systems": systems, "load_before": load_before, "load_after": spawn.load_1m()}


def copy_logs(work: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in ((work / "hubforge" / "hub.log", "hubforge-hub.log"),
                      (work / "gateway" / "gateway.log", "dask-gateway-server.log")):
        if src.exists():
            shutil.copy(src, dest / name)


def versions() -> dict:
    import dask
    import dask_gateway
    import dask_gateway_server
    import distributed

    return {"dask": dask.__version__, "distributed": distributed.__version__,
            "dask_gateway": dask_gateway.__version__, "dask_gateway_server": dask_gateway_server.__version__}


def report(args, res: dict) -> dict:
    spawn = _spawn_helpers()
    systems: list[System] = res["systems"]
    names = [s.name for s in systems]
    fig: dict = {"rounds": args.rounds, "warmup": args.warmup, "compute_repeat": args.compute_repeat,
                 "workers": WORKERS, "systems": names, "median_s": {}, "p95_s": {}}
    for s in systems:
        fig["median_s"][s.name] = {m: round(statistics.median(r[m] for r in s.rounds), 3) for m in METRICS}
        fig["p95_s"][s.name] = {m: round(spawn.percentile([r[m] for r in s.rounds], 95), 3) for m in METRICS}
    if args.warmup:
        fig["warmup_s"] = {s.name: {m: round(v, 3) for m, v in s.warmup[0].items()} for s in systems}
    ratios = []  # (key, label)
    for other in ("local", "gateway"):
        if "hubforge" in names and other in names:
            key = f"ratio_hubforge_{other}"
            fig[key] = {m: round(fig["median_s"]["hubforge"][m] / fig["median_s"][other][m], 3)
                        for m in METRICS}
            ratios.append((key, f"HubForge / {LABELS[other].split(' ')[0]}"))
    if "ratio_hubforge_local" in fig:
        fig["goal_ready_within_1_5x_local"] = fig["ratio_hubforge_local"]["t_4"] <= 1.5
        fig["goal_compute_within_1_2x_local"] = fig["ratio_hubforge_local"]["compute"] <= 1.2

    order = {1: "one system", 2: "interleaved A B B A", 3: "interleaved A B C C B A"}[len(systems)]
    print(f"\nA cluster of {WORKERS} workers (1 core, 1 GiB each), seconds from the request; "
          f"{args.rounds} round{'s' if args.rounds != 1 else ''} ({order}, {args.warmup} untimed warm-up each); "
          f"compute: median of {args.compute_repeat} after one untimed run:")
    width = 26
    print(f"  {'':{width}}" + "".join(f" {LABELS[n].split(' ')[0]:>25}" for n in names)
          + "".join(f" {label:>24}" for _, label in ratios))
    print(f"  {'':{width}}" + " {:>12}{:>13}".format("median", "p95") * len(names)
          + "".join(f" {'(medians)':>24}" for _ in ratios))
    for m, what in METRICS.items():
        cells = "".join(f" {fig['median_s'][n][m]:11.3f}s{fig['p95_s'][n][m]:12.3f}s" for n in names)
        cells += "".join(f" {fig[key][m]:23.2f}x" for key, _ in ratios)
        print(f"  {what:{width}}{cells}")
    if "warmup_s" in fig:
        print("  first round (warm-up), 4 workers ready: "
              + ", ".join(f"{LABELS[n].split(' ')[0]} {fig['warmup_s'][n]['t_4']:.2f}s" for n in names))
    if "goal_ready_within_1_5x_local" in fig:
        verdict = {True: "met", False: "NOT met"}
        print(f"\n  goal, HubForge's 4 workers ready within 1.5x LocalCluster's time: "
              f"{verdict[fig['goal_ready_within_1_5x_local']]} ({fig['ratio_hubforge_local']['t_4']:.2f}x)")
        print(f"  goal, HubForge's computation within 1.2x LocalCluster's: "
              f"{verdict[fig['goal_compute_within_1_2x_local']]} ({fig['ratio_hubforge_local']['compute']:.2f}x)")
    print(f"  load average (1 min): {res['load_before']:.2f} before, {res['load_after']:.2f} after")

    fig["load_1m_before"], fig["load_1m_after"] = res["load_before"], res["load_after"]
    fig["versions"] = versions()
    fig["machine"] = {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                      "platform": platform.platform(), "python": platform.python_version(),
                      "root": os.geteuid() == 0, "description": spawn.machine()}
    fig["date"] = date.today().isoformat()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Time a {WORKERS}-worker Dask cluster from request to 1, 2 and {WORKERS} workers "
                    "ready, and a fixed computation on it (the sum of a 4000x4000 random array in "
                    "1000x1000 chunks), for HubForge's cluster (real hub and dask-gateway service), "
                    "stock dask-gateway with its local backend and distributed.LocalCluster, in one "
                    "run; print medians, p95 and the ratios. The last output line is a JSON object "
                    "with the figures.",
    )
    parser.add_argument("--rounds", type=int, default=5,
                        help=f"timed rounds per system (default 5, at most {MAX_ROUNDS})")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds per system before timing (default 1)")
    parser.add_argument("--compute-repeat", type=int, default=3,
                        help="timed runs of the computation per round, after one untimed run; "
                             "the round's figure is their median (default 3)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated systems to run, from {', '.join(SYSTEMS)} (default all)")
    parser.add_argument("--max-minutes", type=float, default=30,
                        help="give up (and clean up) after this many minutes (default 30)")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy the HubForge hub's log (hub, proxy, gateway service) and the "
                             "dask-gateway server's log into DIR")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be between 1 and {MAX_ROUNDS}")
    if not 0 <= args.warmup <= 5:
        parser.error("--warmup must be between 0 and 5")
    if not 1 <= args.compute_repeat <= 20:
        parser.error("--compute-repeat must be between 1 and 20")
    asked = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := sorted(set(asked) - set(SYSTEMS)):
        parser.error(f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    args.systems = [s for s in SYSTEMS if s in asked]
    if not args.systems:
        parser.error("--systems: name at least one of " + ", ".join(SYSTEMS))

    # Cleanup stops any cluster left running, then the hub (with its proxy and gateway
    # service) and the dask-gateway server, then removes the temporary directory.
    return _spawn_helpers().run_with_cleanup(run, args, report)


if __name__ == "__main__":
    sys.exit(main())
