"""Trivial notebook runs: HubForge's jobs service against papermill's CLI and Python API, in one run.

The same trivial parameterised notebook (a ``parameters`` cell ``x = 1`` and a cell
``y = x * 2`` / ``print(y)``, kernel ``python3``) is run ``--runs`` times (default 50)
with ``x = 0, 1, 2, ...`` at ``--concurrency`` runs in flight (default 2) by three
systems, on this machine, side by side:

* **hubforge**: a real HubForge hub (HubForge's own ``hub_config/jupyterhub_config.py``
  through ``tests/hubprocess.py``, with its proxy; ``shared`` isolation, the Dask
  gateway off, ``jobs.max_concurrent_runs`` and ``max_concurrent_runs_per_user`` set to
  the concurrency) runs its ``jobs`` service. The hub user ``bench`` creates one job
  holding the notebook (a cron trigger for 1 January, so it never fires by itself),
  then each run is ``POST services/jobs/api/jobs/<id>/runs`` with ``{"parameters":
  {"x": i}}`` through the proxy with the user's API token; its end is seen by polling
  ``GET services/jobs/api/runs?job=<id>`` every ``--poll-ms`` (default 20 ms) until the
  run's status is final. One ``requests`` session (kept-alive connection), as a script
  would. Each run gets a new kernel from a warm runner (see `hubforge.jobs.runner`);
* **papermill CLI**: ``papermill in.ipynb out-<i>.ipynb -p x <i> --no-progress-bar``,
  a new process per run (``--concurrency`` threads each running one at a time);
* **papermill API**: ``papermill.execute_notebook(in, out, parameters={"x": i},
  progress_bar=False)`` in a ``ProcessPoolExecutor(--concurrency)`` whose workers
  imported papermill when they started (before any timing): each call starts its own
  kernel, as papermill always does.

A run's *latency* is measured here, from just before the call that asks for it (the
POST, the process start, the pool submit) until its end is seen (final status polled,
process exited, future done); a new run is submitted as soon as one ends, so exactly
``--concurrency`` are in flight. *Throughput* is runs per second of wall time while
the runs were in flight (the rounds' wall times added). *Overhead* is latency minus the
notebook's own execution: the sum of its cells' durations in the output notebook's
papermill metadata. The runs are split into ``--rounds`` rounds (default 5) and the
systems alternate in mirrored order (hubforge, cli, api, api, cli, hubforge, ...) after
``--warmup`` untimed runs each (default 3), so machine noise falls on all alike.

Checks, untimed, after the timed runs:

* **outputs identical**: for every parameter value, HubForge's output notebook (``GET
  api/runs/<id>/output``) and the two papermill outputs have the same cells (type,
  source, tags, execution count, outputs) and the same kernelspec, language info,
  injected parameters and papermill exception flag; timing metadata, cell ids and the
  input/output paths are ignored. Also checked: each run printed ``2 * x``;
* **fresh kernel**: ``2 * concurrency`` runs of a second job whose cell prints the
  kernel's pid and a variable a previous run on the same kernel would have left: every
  pid must differ and nothing may be left;
* **cron start** (skip with ``--no-cron``): a job with cron ``* * * * *`` (UTC) is
  created and its first run awaited (up to 60 s until the next minute boundary, plus
  the run): ``started_at - scheduled_for`` from the run (the service's dispatch), and
  the first cell's start from the output notebook, both relative to the cron time.

One line per round goes to stderr; a table, the ratios and the goal checks go to stdout,
and the last line is one JSON object with the figures. Everything it starts (hub, proxy,
jobs service and its runners, the process pool, the temporary directory) is removed on
exit, Ctrl-C and errors included. No root needed. As root, each HubForge runner also
gets a control group with its profile's limits (papermill's runs are not limited), unless
``--no-cgroups``: use that while other HubForge hubs run on the machine (a test run),
since a jobs service starting up removes the runner groups of every other jobs service,
killing their runs (and theirs kill this one's).

    .venv/bin/python benchmarks/jobs.py                   # 50 runs per system, concurrency 2
    .venv/bin/python benchmarks/jobs.py --runs 20 --no-cron
"""

# Only the standard library at the top, and all the work under main(): the papermill
# API pool starts its workers with multiprocessing's spawn, which runs this file again,
# as `__mp_main__`, in every worker; that must be cheap and must start nothing.

from __future__ import annotations

import abc
import argparse
import concurrent.futures as cf
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# Run as a script, this folder is first on sys.path, where dask.py would shadow the
# `dask` package (and data.py a `data` module); take it off and load spawn.py by path.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
os.environ.setdefault("HUBFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

VENV_BIN = Path(sys.executable).parent
USER = "bench"
ADMIN_PASSWORD = "bench-horse-battery-9"
SYSTEMS = ("hubforge", "cli", "api")
LABELS = {"hubforge": "HubForge jobs", "cli": "papermill CLI", "api": "papermill API"}
JSON_NAMES = {"hubforge": "hubforge", "cli": "papermill_cli", "api": "papermill_api"}
#: Seconds any one run may take before the benchmark gives up.
RUN_TIMEOUT_S = 120
#: A cron expression that never fires during a run: 00:00 on 1 January.
NEVER = "0 0 1 1 *"
MAX_RUNS = 1000
#: Offsets of the parameter values of warm-up and check runs (timed runs use 0..runs-1).
WARMUP_X, FRESH_X = 100_000, 200_000
GOAL_LATENCY_S = 0.3
GOAL_RATIO_API = 3.0
GOAL_CRON_S = 1.0
FINAL = ("succeeded", "failed", "timed_out", "cancelled")


def _spawn_helpers():
    """benchmarks/spawn.py's helpers (machine, percentile, run_with_cleanup), loaded by path."""
    import importlib.util

    if "spawn" not in sys.modules:
        spec = importlib.util.spec_from_file_location("spawn", HERE / "spawn.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["spawn"] = module
        spec.loader.exec_module(module)
    return sys.modules["spawn"]


# --- the notebooks --------------------------------------------------------------------

def notebook(body: str) -> dict:
    """A notebook with the parameters cell ``x = 1`` and one code cell `body`."""
    return {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": "parameters", "metadata": {"tags": ["parameters"]},
             "outputs": [], "source": "x = 1"},
            {"cell_type": "code", "execution_count": None, "id": "body", "metadata": {}, "outputs": [],
             "source": body},
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


TRIVIAL = notebook("y = x * 2\nprint(y)")
#: Prints the kernel's pid and what an earlier run on the same kernel would have left.
FRESH = notebook("import os\nprint(os.getpid(), globals().get('_hubforge_bench_mark'))\n_hubforge_bench_mark = x")


def parse_time(text: str) -> float:
    """An ISO 8601 time (``Z``, an offset, or naive UTC) as a POSIX timestamp."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def cell_times(nb: dict) -> dict:
    """From papermill's metadata: the cells' summed durations, first start, last end."""
    cells = [c.get("metadata", {}).get("papermill", {}) for c in nb.get("cells", [])]
    cells = [c for c in cells if c.get("start_time") and c.get("end_time")]
    if not cells:
        raise RuntimeError("the output notebook has no papermill cell timings")
    return {"cells_s": sum(c.get("duration") or 0.0 for c in cells),
            "first_start": parse_time(cells[0]["start_time"]), "last_end": parse_time(cells[-1]["end_time"])}


def normalized(nb: dict) -> dict:
    """What must be equal between two output notebooks (see the module doc)."""
    import nbformat

    nb = nbformat.reads(json.dumps(nb), as_version=4)  # joins multi-line strings
    meta = nb.metadata
    pm = meta.get("papermill", {})
    return {
        "kernelspec": meta.get("kernelspec"),
        "language_info": meta.get("language_info"),
        "parameters": pm.get("parameters"),
        "exception": pm.get("exception"),
        "cells": [{
            "cell_type": c.cell_type,
            "source": c.source,
            "tags": list(c.metadata.get("tags", [])),
            "execution_count": c.get("execution_count"),
            "outputs": [json.loads(json.dumps(o)) for o in c.get("outputs", [])],
        } for c in nb.cells],
    }


def first_difference(a, b, path: str = "") -> str | None:
    """Where two JSON-like values first differ (a readable path), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}.{key}: only in {'the first' if key in a else 'the second'}"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items against {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} against {b!r}"


def stdout_of(nb: dict) -> str:
    import nbformat

    nb = nbformat.reads(json.dumps(nb), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


# --- driving runs -----------------------------------------------------------------------

def drive_futures(submit, xs: list[int], concurrency: int) -> tuple[float, list[dict]]:
    """Keep `concurrency` futures from ``submit(x)`` in flight until every x has run.

    Returns the wall time and one record per run: x, latency, wall-clock submit and end."""
    todo = list(xs)
    pending: dict = {}
    records = []
    t_start = time.perf_counter()
    while todo or pending:
        while todo and len(pending) < concurrency:
            x = todo.pop(0)
            pending[submit(x)] = (x, time.perf_counter(), time.time())
        oldest = min(t0 for _, t0, _ in pending.values())
        left = RUN_TIMEOUT_S - (time.perf_counter() - oldest)
        done, _ = cf.wait(pending, timeout=max(0.0, left), return_when=cf.FIRST_COMPLETED)
        if not done:
            raise TimeoutError(f"a run took more than {RUN_TIMEOUT_S} s")
        t_end, wall_end = time.perf_counter(), time.time()
        for future in done:
            x, t0, wall0 = pending.pop(future)
            future.result()  # raises the run's failure
            records.append({"x": x, "latency": t_end - t0, "submit": wall0, "seen": wall_end})
    return time.perf_counter() - t_start, records


class System(abc.ABC):
    """One way to run the notebook: `batch` runs some parameter values, `outputs` reads
    back the output notebooks of every run so far (by x)."""

    name = ""

    def __init__(self):
        self.records: list[dict] = []
        self.walls: list[float] = []
        self._outputs: dict[int, dict] = {}

    def batch(self, xs: list[int], concurrency: int, record: bool) -> tuple[float, list[dict]]:
        wall, records = self._batch(xs, concurrency)
        if record:
            self.walls.append(wall)
            self.records.extend(records)
        return wall, records

    @abc.abstractmethod
    def _batch(self, xs: list[int], concurrency: int) -> tuple[float, list[dict]]:
        """Run the values `xs` at `concurrency`: the wall time and one record per run."""

    def output(self, x: int) -> dict:
        """The output notebook of the run with parameter `x` (read once)."""
        if x not in self._outputs:
            self._outputs[x] = self._output(x)
        return self._outputs[x]

    @abc.abstractmethod
    def _output(self, x: int) -> dict:
        """Read the output notebook of the run with parameter `x`."""


def _cli_run(command: list[str], cwd: Path) -> None:
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f"papermill exited with {out.returncode}: {out.stderr[-2000:]}")


class CLISystem(System):
    name = "cli"

    def __init__(self, workdir: Path, input_path: Path, concurrency: int, cleanup: list):
        super().__init__()
        self.dir = workdir / "papermill-cli"
        self.dir.mkdir()
        self.input = input_path
        self.pool = cf.ThreadPoolExecutor(concurrency, thread_name_prefix="papermill-cli")
        cleanup.append(lambda: self.pool.shutdown(cancel_futures=True))

    def path(self, x: int) -> Path:
        return self.dir / f"out-{x}.ipynb"

    def _batch(self, xs, concurrency):
        papermill = str(VENV_BIN / "papermill")
        return drive_futures(lambda x: self.pool.submit(
            _cli_run, [papermill, str(self.input), str(self.path(x)), "-p", "x", str(x), "--no-progress-bar"],
            self.dir), xs, concurrency)

    def _output(self, x):
        return json.loads(self.path(x).read_text())


def _api_worker_init(log_dir: str) -> None:
    """The API pool's initializer: a worker imports papermill before its first run, and
    its output (and its kernels', which inherit it) goes to a log file, not the terminal."""
    log = os.open(os.path.join(log_dir, f"worker-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    import papermill  # noqa: F401


def _api_run(input_path: str, output_path: str, x: int) -> None:
    import papermill

    papermill.execute_notebook(input_path, output_path, parameters={"x": x}, progress_bar=False)


class APISystem(System):
    name = "api"

    def __init__(self, workdir: Path, input_path: Path, concurrency: int, cleanup: list):
        import multiprocessing

        super().__init__()
        self.dir = workdir / "papermill-api"
        self.dir.mkdir()
        self.input = input_path
        self.pool = cf.ProcessPoolExecutor(concurrency, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_api_worker_init, initargs=(str(self.dir),))
        cleanup.append(lambda: self.pool.shutdown(cancel_futures=True))
        # Start every worker now (and let it import papermill): not part of any run.
        cf.wait([self.pool.submit(time.sleep, 0.5) for _ in range(concurrency)], timeout=120)

    def path(self, x: int) -> Path:
        return self.dir / f"out-{x}.ipynb"

    def _batch(self, xs, concurrency):
        return drive_futures(lambda x: self.pool.submit(_api_run, str(self.input), str(self.path(x)), x),
                             xs, concurrency)

    def _output(self, x):
        return json.loads(self.path(x).read_text())


class HubForgeSystem(System):
    """Runs through the jobs service's REST API, as user USER."""

    name = "hubforge"

    def __init__(self, base: str, token: str, poll_s: float):
        import requests

        super().__init__()
        self.base = base
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {token}"
        self.poll_s = poll_s
        self.run_ids: dict[int, int] = {}  # x -> run id
        self.job_id: int | None = None

    def call(self, method: str, path: str, expect: int = 200, **kw):
        kw.setdefault("timeout", 30)
        r = self.http.request(method, self.base + path, **kw)
        if r.status_code != expect:
            raise RuntimeError(f"{method} {path} answered {r.status_code}: {r.text[:500]}")
        return r.json() if r.content and expect != 204 else None

    def create_job(self, name: str, nb: dict, cron: str) -> dict:
        return self.call("POST", "api/jobs", 201, json={
            "name": name, "notebook": {"path": f"{name}.ipynb", "content": nb},
            "trigger": {"type": "cron", "cron": cron, "timezone": "UTC"}, "paused": False,
            "timeout": RUN_TIMEOUT_S, "retention": {"keep_runs": MAX_RUNS * 2},
        })

    def setup(self) -> None:
        self.job_id = self.create_job("bench-trivial", TRIVIAL, NEVER)["id"]

    def _batch(self, xs, concurrency):
        return self.drive(self.job_id, xs, concurrency, self.run_ids)

    def drive(self, job_id: int, xs: list[int], concurrency: int, run_ids: dict) -> tuple[float, list[dict]]:
        """Keep `concurrency` runs of the job in flight until every x has run."""
        todo = list(xs)
        inflight: dict[int, tuple] = {}  # run id -> (x, t0, wall0, post_s)
        records = []
        listing = f"api/runs?job={job_id}&limit={max(10, 2 * concurrency)}"
        t_start = time.perf_counter()
        while todo or inflight:
            while todo and len(inflight) < concurrency:
                x = todo.pop(0)
                t0, wall0 = time.perf_counter(), time.time()
                run = self.call("POST", f"api/jobs/{job_id}/runs", 201, json={"parameters": {"x": x}})
                inflight[run["id"]] = (x, t0, wall0, time.perf_counter() - t0)
                run_ids[x] = run["id"]
            time.sleep(self.poll_s)
            seen = {r["id"]: r for r in self.call("GET", listing)["runs"]}
            t_end, wall_end = time.perf_counter(), time.time()
            for run_id in list(inflight):
                run = seen.get(run_id) or self.call("GET", f"api/runs/{run_id}")
                x, t0, wall0, post_s = inflight[run_id]
                if run["status"] not in FINAL:
                    if t_end - t0 > RUN_TIMEOUT_S:
                        raise TimeoutError(f"run {run_id} still {run['status']} after {RUN_TIMEOUT_S} s")
                    continue
                if run["status"] != "succeeded":
                    raise RuntimeError(f"run {run_id} (x={x}) {run['status']}: {run['reason']}")
                del inflight[run_id]
                records.append({"x": x, "latency": t_end - t0, "submit": wall0, "seen": wall_end,
                                "post_s": post_s, "run": run})
        return time.perf_counter() - t_start, records

    def _output(self, x):
        return self.run_output(self.run_ids[x])

    def run_output(self, run_id: int) -> dict:
        r = self.http.get(f"{self.base}api/runs/{run_id}/output", timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"GET api/runs/{run_id}/output answered {r.status_code}: {r.text[:500]}")
        return r.json()


def start_hubforge(workdir: Path, concurrency: int, poll_s: float, cgroups: bool, cleanup: list) -> tuple:
    from hubprocess import Browserless, HubProcess, ProcessExited, wait_for

    for attempt in (1, 2):
        hub = HubProcess(workdir / f"try-{attempt}", local={"isolation": "shared", "use_cgroups": cgroups},
                         dask={"enabled": False},
                         jobs={"max_concurrent_runs": concurrency, "max_concurrent_runs_per_user": concurrency})
        cleanup.append(hub.stop)
        try:
            hub.start()
            break
        except ProcessExited as e:
            # JupyterHub gives a managed service 10 s to answer; the jobs service imports
            # papermill and IPython (and its forkserver's preload) before it listens, which
            # can take longer on a busy machine. Once more, then give up.
            if attempt == 2 or "Cannot connect to jobs service" not in str(e):
                raise
            print("the hub gave up on the jobs service (it did not answer within JupyterHub's 10 s, "
                  "busy machine?); starting the hub again", file=sys.stderr)
    r = Browserless(hub).signup("admin", ADMIN_PASSWORD)
    r.raise_for_status()
    token = hub.make_user(hub.token("admin"), USER)
    system = HubForgeSystem(f"{hub.url}services/jobs/", token, poll_s)
    cleanup.append(system.http.close)  # runs before hub.stop
    wait_for(lambda: system.http.get(system.base + "api/jobs", timeout=5).status_code == 200, 60,
             what="the jobs service to answer")
    system.setup()
    return hub, system


# --- the checks ---------------------------------------------------------------------------

def check_outputs(systems: dict, xs: list[int]) -> dict:
    """Every timed run's output, HubForge against both papermills (see the module doc)."""
    differences, wrong = [], []
    for x in xs:
        outs = {name: systems[name].output(x) for name in systems}
        for name, nb in outs.items():
            if stdout_of(nb) != f"{2 * x}\n":
                wrong.append(f"{LABELS[name]}, x={x}: printed {stdout_of(nb)!r}")
        if "hubforge" in outs:
            ref = normalized(outs["hubforge"])
            for other in ("api", "cli"):
                if other in outs:
                    found = first_difference(ref, normalized(outs[other]))
                    if found:
                        differences.append(f"x={x}, HubForge against {LABELS[other]}: {found}")
    return {"identical": not differences, "correct": not wrong, "differences": differences[:5],
            "wrong": wrong[:5], "compared": len(xs)}


def check_fresh(system: HubForgeSystem, concurrency: int) -> dict:
    """Runs of a job that prints its kernel's pid and what an earlier run left behind."""
    job = system.create_job("bench-fresh", FRESH, NEVER)
    run_ids: dict[int, int] = {}
    n = 2 * concurrency
    system.drive(job["id"], [FRESH_X + i for i in range(n)], concurrency, run_ids)
    pids, leftovers = [], []
    for x, run_id in sorted(run_ids.items()):
        pid, left = stdout_of(system.run_output(run_id)).split()
        pids.append(int(pid))
        if left != "None":
            leftovers.append(f"run {run_id} found {left} from an earlier run")
    system.call("DELETE", f"api/jobs/{job['id']}", 204)
    return {"runs": n, "distinct_pids": len(set(pids)), "leftovers": leftovers,
            "fresh": len(set(pids)) == n and not leftovers}


def check_cron(system: HubForgeSystem) -> dict:
    """A ``* * * * *`` job's first run: its delays after the cron time."""
    job = system.create_job("bench-cron", TRIVIAL, "* * * * *")
    try:
        due = parse_time(job["next_run"])
        wait_s = due - time.time()
        print(f"cron: a job with '* * * * *' (UTC); waiting {max(wait_s, 0):.0f} s for the next minute "
              f"boundary ({datetime.fromtimestamp(due, UTC):%H:%M:%S} UTC) and its run ...", file=sys.stderr)
        deadline = time.monotonic() + max(wait_s, 0) + 60
        run = None
        while time.monotonic() < deadline:
            runs = system.call("GET", f"api/jobs/{job['id']}/runs?limit=5")["runs"]
            if runs and runs[-1]["status"] in FINAL:
                run = runs[-1]  # the oldest: the first firing
                break
            time.sleep(0.1)
        seen = time.time()
        if run is None:
            raise TimeoutError(f"the cron job's first run did not finish within {wait_s + 60:.0f} s")
    finally:
        system.call("POST", f"api/jobs/{job['id']}/pause")
    if run["status"] != "succeeded":
        raise RuntimeError(f"the cron run {run['id']} {run['status']}: {run['reason']}")
    scheduled = parse_time(run["scheduled_for"])
    cells = cell_times(system.run_output(run["id"]))
    system.call("DELETE", f"api/jobs/{job['id']}", 204)
    return {
        "scheduled_for": run["scheduled_for"],
        "created_before_s": round(due - parse_time(job["created"]), 1),
        "cron_start_delay_s": round(parse_time(run["started_at"]) - scheduled, 3),
        "cron_queued_delay_s": round(parse_time(run["queued_at"]) - scheduled, 3),
        "cron_first_cell_delay_s": round(cells["first_start"] - scheduled, 3),
        "cron_finished_delay_s": round(parse_time(run["finished_at"]) - scheduled, 3),
        "cron_seen_delay_s": round(seen - scheduled, 3),
    }


# --- the run --------------------------------------------------------------------------------

def split(xs: list[int], parts: int) -> list[list[int]]:
    size, extra = divmod(len(xs), parts)
    out, i = [], 0
    for p in range(parts):
        n = size + (1 if p < extra else 0)
        out.append(xs[i:i + n])
        i += n
    return [chunk for chunk in out if chunk]


def run(args, cleanup: list) -> dict:
    spawn = _spawn_helpers()
    import nbformat  # noqa: F401  (imported before any timing)
    import requests  # noqa: F401

    work = Path(tempfile.mkdtemp(prefix="hubforge-bench-jobs-"))
    cleanup.append(lambda: shutil.rmtree(work, ignore_errors=True))
    if args.keep_logs:
        cleanup.append(lambda: copy_logs(work, Path(args.keep_logs)))
    input_path = work / "trivial.ipynb"
    input_path.write_text(json.dumps(TRIVIAL, indent=1))

    systems: dict[str, System] = {}
    for name in SYSTEMS:
        print(f"starting {LABELS[name]} ...", file=sys.stderr)
        if name == "hubforge":
            _, systems[name] = start_hubforge(work / "hub", args.concurrency, args.poll_ms / 1000,
                                             not args.no_cgroups, cleanup)
        elif name == "cli":
            systems[name] = CLISystem(work, input_path, args.concurrency, cleanup)
        else:
            systems[name] = APISystem(work, input_path, args.concurrency, cleanup)
    deadline = time.monotonic() + args.max_minutes * 60

    def batch(system: System, xs: list[int], label: str, record: bool) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"--max-minutes {args.max_minutes} reached")
        wall, records = system.batch(xs, args.concurrency, record)
        lat = [r["latency"] for r in records]
        print(f"[{system.name:8} {label}] {len(xs)} runs in {wall:6.2f} s: {len(xs) / wall:5.2f} runs/s, "
              f"latency mean {statistics.mean(lat):.3f} s, max {max(lat):.3f} s", file=sys.stderr)

    load_before = spawn.load_1m()
    if args.warmup:
        for system in systems.values():
            batch(system, [WARMUP_X + i for i in range(args.warmup)], "warm-up", record=False)
    rounds = split(list(range(args.runs)), args.rounds)
    order = list(systems.values())
    for i, xs in enumerate(rounds):
        # Mirrored rounds (A B C, C B A, ...): each system is first and last equally often.
        for system in order if i % 2 == 0 else order[::-1]:
            batch(system, xs, f"{i + 1:2}/{len(rounds)}", record=True)
    load_after = spawn.load_1m()

    print("reading the output notebooks and comparing them ...", file=sys.stderr)
    for system in systems.values():
        for r in system.records:
            r.update(cell_times(system.output(r["x"])))
    outputs = check_outputs(systems, list(range(args.runs)))
    print("checking that every HubForge run gets a fresh kernel ...", file=sys.stderr)
    fresh = check_fresh(systems["hubforge"], args.concurrency)
    cron = None if args.no_cron else check_cron(systems["hubforge"])
    return {"systems": systems, "outputs": outputs, "fresh": fresh, "cron": cron,
            "load_before": load_before, "load_after": load_after}


def copy_logs(work: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for log in sorted((work / "hub").glob("try-*/hub.log")):
        shutil.copy(log, dest / f"hubforge-hub-{log.parent.name}.log")
    for log in sorted((work / "hub").glob("try-*/data/jobs/runs/*.log")):  # each run's runner log
        (dest / "runs").mkdir(exist_ok=True)
        shutil.copy(log, dest / "runs" / log.name)


# --- the report -------------------------------------------------------------------------------

def figures(system: System, concurrency: int) -> dict:
    pct = _spawn_helpers().percentile
    lat = [r["latency"] for r in system.records]
    over = [r["latency"] - r["cells_s"] for r in system.records]
    wall = sum(system.walls)
    return {
        "latency_mean_s": statistics.mean(lat), "latency_p50_s": pct(lat, 50), "latency_p95_s": pct(lat, 95),
        "latency_min_s": min(lat), "latency_max_s": max(lat),
        "overhead_mean_s": statistics.mean(over), "overhead_p50_s": pct(over, 50),
        "execution_mean_s": statistics.mean(r["cells_s"] for r in system.records),
        "throughput_runs_per_s": len(lat) / wall, "per_run_s": wall * concurrency / len(lat), "wall_s": wall,
    }


def phases(system: System) -> dict:
    """Median seconds of each phase of a run, on the wall clock (this machine's, shared)."""
    rows: dict[str, list[float]] = {}

    def add(key, value):
        rows.setdefault(key, []).append(value)

    for r in system.records:
        if system.name == "hubforge":
            run = r["run"]
            add("post", r["post_s"])
            add("submit_to_started", parse_time(run["started_at"]) - r["submit"])
            add("started_to_first_cell", r["first_start"] - parse_time(run["started_at"]))
        else:
            add("submit_to_first_cell", r["first_start"] - r["submit"])
        add("cells", r["last_end"] - r["first_start"])
        if system.name == "hubforge":
            add("last_cell_to_finished", parse_time(r["run"]["finished_at"]) - r["last_end"])
            add("finished_to_seen", r["seen"] - parse_time(r["run"]["finished_at"]))
        else:
            add("last_cell_to_seen", r["seen"] - r["last_end"])
    return {k: round(statistics.median(v), 3) for k, v in rows.items()}


PHASES = {
    "post": "POST .../runs answered (proxy, token check, run queued)",
    "submit_to_started": "submit until the service dispatched it (started_at)",
    "started_to_first_cell": "dispatched until its first cell starts (warm runner, kernel, papermill)",
    "submit_to_first_cell": "submit until the first cell starts (process, imports, kernel start)",
    "cells": "first cell start to last cell end (the notebook)",
    "last_cell_to_finished": "last cell end until the run is recorded (finished_at)",
    "finished_to_seen": "recorded until the client sees it (poll interval, HTTP)",
    "last_cell_to_seen": "last cell end until the client sees the end (kernel stop, write, exit)",
}


def versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("papermill", "nbclient", "ipykernel", "jupyter_client", "jupyterhub")}


def report(args, res: dict) -> dict:
    spawn = _spawn_helpers()
    systems: dict[str, System] = res["systems"]
    c = args.concurrency
    figs = {name: figures(s, c) for name, s in systems.items()}
    fig: dict = {"runs": args.runs, "concurrency": c, "rounds": len(split(list(range(args.runs)), args.rounds)),
                 "warmup": args.warmup, "poll_ms": args.poll_ms, "hubforge_cgroups": not args.no_cgroups,
                 "systems": {JSON_NAMES[n]: {k: round(v, 4) for k, v in f.items()} for n, f in figs.items()}}
    hf = figs["hubforge"]
    for other in ("api", "cli"):
        o = figs[other]
        fig[f"ratio_latency_{JSON_NAMES[other]}_over_hubforge"] = round(o["latency_mean_s"] / hf["latency_mean_s"], 2)
        fig[f"ratio_per_run_{JSON_NAMES[other]}_over_hubforge"] = round(o["per_run_s"] / hf["per_run_s"], 2)
        fig[f"ratio_overhead_{JSON_NAMES[other]}_over_hubforge"] = round(o["overhead_mean_s"] / hf["overhead_mean_s"], 2)
        fig[f"ratio_throughput_hubforge_over_{JSON_NAMES[other]}"] = round(
            hf["throughput_runs_per_s"] / o["throughput_runs_per_s"], 2)
    fig["phases_median_s"] = {JSON_NAMES[n]: phases(s) for n, s in systems.items()}
    out = res["outputs"]
    fig["outputs_identical"], fig["outputs_correct"] = out["identical"], out["correct"]
    if out["differences"] or out["wrong"]:
        fig["output_problems"] = out["differences"] + out["wrong"]
    fig["fresh_kernel_per_run"] = res["fresh"]["fresh"]
    fig["fresh_kernel_check"] = res["fresh"]
    cron = res["cron"]
    if cron:
        fig.update(cron)
    fig["goal_hubforge_at_most_0_3s"] = hf["latency_mean_s"] <= GOAL_LATENCY_S
    fig["goal_3x_faster_than_papermill_api"] = fig["ratio_latency_papermill_api_over_hubforge"] >= GOAL_RATIO_API
    fig["goal_cron_start_within_1s"] = None if not cron else cron["cron_start_delay_s"] <= GOAL_CRON_S
    fig["goal_outputs_identical"] = out["identical"] and out["correct"]

    order = "one round" if fig["rounds"] == 1 else "interleaved A B C C B A"
    print(f"\nA trivial parameterised notebook, {args.runs} runs per system at concurrency {c} "
          f"({fig['rounds']} rounds, {order}; {args.warmup} untimed warm-up runs each):")
    head = ("latency mean", "p50", "p95", "max", "overhead mean", "runs/s", "wall x c / runs")
    print(f"  {'':16}" + "".join(f"{h:>16}" for h in head))
    for name, f in figs.items():
        cells = (f["latency_mean_s"], f["latency_p50_s"], f["latency_p95_s"], f["latency_max_s"], f["overhead_mean_s"])
        print(f"  {LABELS[name]:16}" + "".join(f"{v:15.3f}s" for v in cells)
              + f"{f['throughput_runs_per_s']:16.2f}{f['per_run_s']:15.3f}s")
    print(f"  (the notebook's own cells take {hf['execution_mean_s'] * 1000:.0f} ms in HubForge, "
          f"{figs['api']['execution_mean_s'] * 1000:.0f} ms in the papermill API, "
          f"{figs['cli']['execution_mean_s'] * 1000:.0f} ms in the CLI, on average)")
    print("\n  ratios                                  latency   per run   overhead   throughput (HubForge / x)")
    for other in ("api", "cli"):
        j = JSON_NAMES[other]
        print(f"  {LABELS[other] + ' / HubForge':38} {fig[f'ratio_latency_{j}_over_hubforge']:8.2f}x"
              f" {fig[f'ratio_per_run_{j}_over_hubforge']:8.2f}x {fig[f'ratio_overhead_{j}_over_hubforge']:9.2f}x"
              f" {fig[f'ratio_throughput_hubforge_over_{j}']:11.2f}x")

    print("\n  where the time goes (median seconds per run):")
    print(f"  {'':78}" + "".join(f"{LABELS[n]:>15}" for n in systems))
    for key, what in PHASES.items():
        vals = [fig["phases_median_s"][JSON_NAMES[n]].get(key) for n in systems]
        if any(v is not None for v in vals):
            print(f"  {what:78}" + "".join(f"{'-':>15}" if v is None else f"{v:15.3f}" for v in vals))

    print(f"\n  outputs identical: {'yes' if out['identical'] else 'no'} ({out['compared']} parameter values, "
          f"HubForge against both papermills; timing metadata, ids and paths ignored)")
    for line in fig.get("output_problems", []):
        print(f"    {line}")
    fr = res["fresh"]
    print(f"  fresh kernel per run: {'yes' if fr['fresh'] else 'NO'} ({fr['runs']} runs, {fr['distinct_pids']} "
          f"distinct kernel pids, {len(fr['leftovers'])} saw an earlier run's variable)")
    if cron:
        print(f"  cron run at {cron['scheduled_for']}: started_at {cron['cron_start_delay_s']:+.3f} s, "
              f"first cell {cron['cron_first_cell_delay_s']:+.3f} s, finished {cron['cron_finished_delay_s']:+.3f} s "
              f"after the cron time (job created {cron['created_before_s']:.0f} s before it)")
    else:
        print("  cron start: skipped (--no-cron)")
    verdict = {True: "met", False: "NOT met", None: "not measured"}
    print(f"\n  goal, HubForge at most {GOAL_LATENCY_S} s per trivial run end to end: "
          f"{verdict[fig['goal_hubforge_at_most_0_3s']]} ({hf['latency_mean_s']:.3f} s mean latency)")
    print(f"  goal, at least {GOAL_RATIO_API:g}x faster than papermill's API: "
          f"{verdict[fig['goal_3x_faster_than_papermill_api']]} ({fig['ratio_latency_papermill_api_over_hubforge']:.2f}x)")
    print(f"  goal, a scheduled run starts within {GOAL_CRON_S:g} s of its cron time: "
          f"{verdict[fig['goal_cron_start_within_1s']]}")
    print(f"  goal, output notebooks identical in content to papermill's: {verdict[fig['goal_outputs_identical']]}")
    print(f"  load average (1 min): {res['load_before']:.2f} before, {res['load_after']:.2f} after")

    fig["load_1m_before"], fig["load_1m_after"] = res["load_before"], res["load_after"]
    fig["versions"] = versions()
    fig["machine"] = {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                      "processor": platform.processor(), "platform": platform.platform(),
                      "python": platform.python_version(), "root": os.geteuid() == 0,
                      "description": spawn.machine()}
    fig["date"] = date.today().isoformat()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a trivial parameterised notebook many times at a fixed concurrency through "
                    "HubForge's jobs service (real hub), the papermill CLI and papermill's Python API, in "
                    "one run; print per-run latency, overhead and throughput for each and the ratios, check "
                    "that the output notebooks are identical and that every HubForge run gets a fresh "
                    "kernel, and time a cron run's start. The last output line is a JSON object with the "
                    "figures.",
    )
    parser.add_argument("--runs", type=int, default=50, help=f"timed runs per system (default 50, at most {MAX_RUNS})")
    parser.add_argument("--concurrency", type=int, default=2, help="runs in flight at once (default 2)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds the runs are split into (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per system first (default 3)")
    parser.add_argument("--poll-ms", type=float, default=20,
                        help="how often the HubForge client polls its runs' status, ms (default 20)")
    parser.add_argument("--no-cron", action="store_true",
                        help="skip the cron start check (it waits up to a minute for the next minute boundary)")
    parser.add_argument("--no-cgroups", action="store_true",
                        help="run HubForge's runners without control groups (local.use_cgroups: false). "
                             "As root they get one each by default; but the jobs service's start-up sweep "
                             "removes every other jobs service's runner groups on this machine, killing "
                             "their runs, so use this while other HubForge hubs (a test run) are running")
    parser.add_argument("--max-minutes", type=float, default=30,
                        help="give up (and clean up) after this many minutes (default 30)")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy the hub's log (hub, proxy, jobs service) and the HubForge runs' logs into DIR")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= MAX_RUNS:
        parser.error(f"--runs must be between 1 and {MAX_RUNS}")
    if not 1 <= args.concurrency <= 16:
        parser.error("--concurrency must be between 1 and 16")
    if not 1 <= args.rounds <= args.runs:
        parser.error("--rounds must be between 1 and --runs")
    if not 0 <= args.warmup <= 20:
        parser.error("--warmup must be between 0 and 20")
    if not 1 <= args.poll_ms <= 1000:
        parser.error("--poll-ms must be between 1 and 1000")
    # Cleanup closes the pools and the HTTP session, stops the hub (with its proxy and
    # the jobs service, which kills its runners), then removes the temporary directory.
    return _spawn_helpers().run_with_cleanup(run, args, report)


if __name__ == "__main__":
    sys.exit(main())
