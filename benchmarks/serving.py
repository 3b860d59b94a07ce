"""Model serving: HubForge's models service against ``mlflow models serve``, in one run.

Two scikit-learn models are built here (fixed seed) and saved once each with
``mlflow.sklearn.save_model`` (cloudpickle format, with signature and input example):

* **pipeline**: ``Pipeline(ColumnTransformer([StandardScaler on age, income,
  tenure_months; OneHotEncoder(handle_unknown="ignore") on plan, region]),
  LogisticRegression())`` fitted on 4000 rows of a mixed-type DataFrame (int, float and
  string columns);
* **numeric**: ``LogisticRegression()`` on 8 float columns, 4000 rows.

The same saved directory is served, on this machine, side by side, by:

* **MLflow** (the reference): ``mlflow models serve -m DIR --env-manager local --host
  127.0.0.1 -p PORT`` (MLflow's defaults otherwise; ``--mlflow-workers`` passes
  ``--workers``), one server per model, from a separate virtual environment with the
  full ``mlflow`` package (it would downgrade pyarrow in HubForge's). That environment is
  created on first use (``--mlflow-venv``, default ``~/.cache/hubforge-bench/mlflow-venv``;
  ``pip install`` takes a few minutes, once) with mlflow, scikit-learn, pandas, numpy,
  scipy and cloudpickle pinned to the versions in HubForge's environment, so both sides
  unpickle and run the same code; it is reused while those versions match;
* **HubForge**: a real HubForge hub (HubForge's own ``hub_config/jupyterhub_config.py``
  through ``tests/hubprocess.py``, with its proxy and hostile base URL; mode ``local``,
  ``shared`` isolation, the Dask gateway and the jobs service off, ``models: {}``). The hub
  user ``bench`` uploads each directory as a tar.gz (``POST
  services/models/api/models/<name>/versions``), points the ``production`` alias at
  version 1, and the benchmark waits for ``GET services/models/<name>/health`` to say
  ``ready``. Requests go to ``POST services/models/<name>/predict`` through the hub's
  public proxy with ``Authorization: token <the user's API token>``: the figures include
  the proxy and the hub-token check, as users get them.

Before any timing, both systems must return, for the first five rows (one request each
and one request with all five), exactly the predictions of ``model.predict`` in this
process.

The load generator is ``wrk`` (``/usr/bin/wrk``) for both, with a Lua script that sets
the method, the body (one row: ``{"dataframe_records": [<row 0>]}``, MLflow's scoring
format, which HubForge accepts too) and the headers, and whose ``done()`` prints one JSON
line with the request count, duration, socket errors, HTTP status errors (wrk counts
every status >= 400; each target is first checked to answer 200) and the latency
percentiles. Concurrency 1 is ``wrk -t1 -c1``, concurrency 10 ``wrk -t2 -c10``, for
``--duration`` seconds (default 15) after an untimed ``--warmup`` run of the same shape
(default 3 s). wrk keeps its connections alive and sends the next request as soon as a
response arrives (closed loop), so requests/s at concurrency 1 is 1 / latency. wrk runs
on the same 2 cores as the servers, alike for both. With ``--rounds`` above 1 the order
of the systems alternates (MLflow first, then HubForge first, ...); throughput is then
all requests over all timed seconds, and p50/p99 the median of the rounds' values.

Goals, checked and printed: at concurrency 10, HubForge's throughput is at least 10x
MLflow's on the pipeline and 5x on the numeric model and its p99 is under 50 ms (both
models); at concurrency 1, HubForge's p50 is at most MLflow's (both models); no failed
request anywhere.

Progress goes to stderr; the tables, the ratios (HubForge / MLflow) and the goals go to
stdout, and the last line is one JSON object with all the figures, the machine and the
versions. Everything runs in a temporary directory (``--keep`` keeps it, with the
servers' logs); the MLflow servers, the hub with its proxy, its services and their model
workers are stopped on exit, Ctrl-C and errors included, and any process still
mentioning the temporary directory afterwards is reported and killed.

    .venv/bin/python benchmarks/serving.py                      # 15 s per wrk run
    .venv/bin/python benchmarks/serving.py --duration 5 --warmup 1
"""

# Only the standard library at the top: scikit-learn, pandas and mlflow load in run().

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# Run as a script, this folder is first on sys.path, where dask.py would shadow the
# `dask` package (and data.py a `data` module); take it off and load spawn.py by path.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != HERE]
os.environ.setdefault("HUBFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

USER = "bench"
ADMIN_PASSWORD = "bench-horse-battery-9"
SEED = 20261126
ROWS = 4000
MODELS = ("pipeline", "numeric")
SYSTEMS = ("mlflow", "hubforge")
LABELS = {"mlflow": "MLflow", "hubforge": "HubForge"}
#: Concurrency -> (wrk threads, connections).
SHAPES = {1: (1, 1), 10: (2, 10)}
#: Packages pinned in the MLflow environment to HubForge's versions ("mlflow" to mlflow-skinny's).
PINNED = ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "cloudpickle")
DEFAULT_MLFLOW_VENV = "~/.cache/hubforge-bench/mlflow-venv"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
#: wrk's per-request timeout: a slower answer counts as a timeout error.
WRK_TIMEOUT_S = 10
START_TIMEOUT_S = 120
GOAL_THROUGHPUT = {"pipeline": 10.0, "numeric": 5.0}
GOAL_P99_MS = 50.0


def _spawn_helpers():
    """benchmarks/spawn.py's helpers (machine, load_1m, run_with_cleanup), loaded by path."""
    import importlib.util

    if "spawn" not in sys.modules:
        spec = importlib.util.spec_from_file_location("spawn", HERE / "spawn.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["spawn"] = module
        spec.loader.exec_module(module)
    return sys.modules["spawn"]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    """Poll `predicate` until truthy; a TimeoutError naming `what` and the last error otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except ProcessLookupError:
            raise
        except Exception as e:  # not answering yet
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last error: {last!r}")


# --- the models ---------------------------------------------------------------------------

def pipeline_data(rng, n: int):
    """A mixed-type table (int, float, str columns) and a binary label that depends on all of them."""
    import numpy as np
    import pandas as pd

    plans = np.array(["basic", "plus", "pro", "enterprise"])
    regions = np.array(["north", "south", "east", "west", "central"])
    X = pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "income": np.round(rng.lognormal(10.5, 0.5, n), 2),
        "plan": plans[rng.integers(0, len(plans), n)],
        "region": regions[rng.integers(0, len(regions), n)],
        "tenure_months": rng.integers(0, 120, n),
    })
    plan_effect = pd.Series(X["plan"]).map({"basic": -1.0, "plus": 0.0, "pro": 0.7, "enterprise": 1.5})
    logit = (0.03 * (X["age"] - 45) + 0.6 * np.log(X["income"] / 40000) + plan_effect.to_numpy()
             - 0.02 * X["tenure_months"] + 0.5 * (X["region"] == "west") + rng.normal(0, 0.5, n))
    return X, (logit > 0).astype("int64").to_numpy()


def numeric_data(rng, n: int):
    import pandas as pd

    X = pd.DataFrame(rng.normal(0, 1, (n, 8)), columns=[f"x{i}" for i in range(8)])
    w = rng.normal(0, 1, 8)
    return X, ((X.to_numpy() @ w + rng.normal(0, 0.5, n)) > 0).astype("int64")


def build_models(models_dir: Path) -> dict:
    """Fit both models and save each with mlflow.sklearn; returns name -> {dir, model, X}."""
    import mlflow.models
    import mlflow.sklearn
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(SEED)
    built = {}
    X, y = pipeline_data(rng, ROWS)
    pipe = Pipeline([
        ("prep", ColumnTransformer([
            ("num", StandardScaler(), ["age", "income", "tenure_months"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
        ])),
        ("clf", LogisticRegression()),
    ]).fit(X, y)
    built["pipeline"] = {"model": pipe, "X": X}
    X, y = numeric_data(rng, ROWS)
    built["numeric"] = {"model": LogisticRegression().fit(X, y), "X": X}
    # Saving warns that integer columns cannot hold missing values and that pickles run
    # code when loaded: both known and beside the point here.
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    for name, b in built.items():
        path = models_dir / name
        head = b["X"].head(5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # MLflow 3.17 saves with skops by default, which neither side has installed.
            mlflow.sklearn.save_model(
                b["model"], str(path),
                signature=mlflow.models.infer_signature(head, b["model"].predict(head)),
                input_example=b["X"].head(3),
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(),
                serialization_format="cloudpickle",
            )
        b["dir"] = path
    return built


def records(X, rows) -> list[dict]:
    """Rows of X as JSON-ready dicts, floats exact (Python's repr round-trips; to_json rounds)."""
    return [{k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
            for row in X.iloc[list(rows)].to_dict(orient="records")]


def body(X, rows) -> bytes:
    return json.dumps({"dataframe_records": records(X, rows)}).encode()


# --- the reference: mlflow models serve -----------------------------------------------------

def pinned_versions() -> dict:
    from importlib.metadata import version

    return {p: version("mlflow-skinny" if p == "mlflow" else p) for p in PINNED}


def venv_versions(venv: Path) -> dict | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    code = ("import json, importlib.metadata as m\n"
            f"out = {{}}\nfor p in {list(PINNED)!r}:\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: out[p] = None\n"
            "print(json.dumps(out))")
    r = subprocess.run([str(python), "-c", code], check=False, capture_output=True, text=True, timeout=120)
    return json.loads(r.stdout) if r.returncode == 0 else None


def ensure_mlflow_venv(venv: Path) -> Path:
    """The MLflow environment at `venv` with the pinned versions, created if missing or stale."""
    pins = pinned_versions()
    if venv_versions(venv) == pins and (venv / "bin" / "mlflow").exists():
        return venv
    if venv.exists():
        if not (venv / "pyvenv.cfg").exists():
            raise RuntimeError(f"{venv} exists and is not a virtual environment; not touching it")
        print(f"{venv}: versions differ from {pins}; creating it again", file=sys.stderr)
        shutil.rmtree(venv)
    requirements = [f"{p}=={v}" for p, v in pins.items()]
    print(f"creating the MLflow environment {venv} (pip install {' '.join(requirements)}; "
          "a few minutes, once) ...", file=sys.stderr)
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The same Python as HubForge's environment, so the pickles load alike.
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    try:
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=300)
        r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements],
                           check=False, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"pip install in {venv} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        got = venv_versions(venv)
        if got != pins:
            raise RuntimeError(f"{venv} has {got}, wanted {pins}")
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)  # never leave a half-made environment to reuse
        raise
    return venv


class MLflowServer:
    """One ``mlflow models serve`` process (and its uvicorn workers) in its own process group."""

    def __init__(self, venv: Path, model_dir: Path, log_path: Path, workers: int | None):
        from hubforge.services import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["MLFLOW_TRACKING_URI"] = (log_path.parent / "mlruns").as_uri()  # nothing of ours to touch
        cmd = [str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager", "local",
               "--host", "127.0.0.1", "-p", str(self.port)]
        if workers:
            cmd += ["--workers", str(workers)]
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=log_path.parent, start_new_session=True)

    def wait_ready(self, http) -> None:
        def up():
            if self.proc.poll() is not None:
                raise ProcessLookupError(f"mlflow models serve exited with {self.proc.returncode}; "
                                         f"log:\n{self.log()[-3000:]}")
            return http.get(self.url + "ping", timeout=2).status_code == 200

        wait_until(up, START_TIMEOUT_S, f"mlflow models serve at {self.url} (log: {self.log_path})")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        # uvicorn and its workers share the group; whatever is left of it goes now, and
        # the group must be gone (not merely signalled) before the work dir is removed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self._log.close()


# --- HubForge ---------------------------------------------------------------------------------

def start_hubforge(workdir: Path, cleanup: list) -> tuple:
    """A HubForge hub with the user USER, as benchmarks/jobs.py starts one; returns (hub, token)."""
    from hubprocess import Browserless, HubProcess, ProcessExited

    for attempt in (1, 2):
        hub = HubProcess(workdir / f"try-{attempt}", mode="local", local={"isolation": "shared"},
                         dask={"enabled": False}, jobs={"enabled": False}, models={})
        cleanup.append(hub.stop)
        try:
            hub.start()
            break
        except ProcessExited as e:
            # JupyterHub gives a managed service 10 s to answer, which a busy machine can
            # miss while the service imports its libraries. Once more, then give up.
            if attempt == 2 or "Cannot connect to" not in str(e):
                raise
            print("the hub gave up on a service that did not answer within JupyterHub's 10 s (busy "
                  "machine?); starting the hub again", file=sys.stderr)
    r = Browserless(hub).signup("admin", ADMIN_PASSWORD)
    r.raise_for_status()
    token = hub.make_user(hub.token("admin"), USER)
    return hub, token


def tar_gz(directory: Path) -> bytes:
    """The directory's contents (not the directory itself) as a tar.gz: MLmodel at the top."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(directory.iterdir()):
            tar.add(child, arcname=child.name)
    return buf.getvalue()


def publish(http, models_url: str, name: str, model_dir: Path) -> int:
    """Upload `model_dir` as a new version of `name`, alias it production, wait until ready."""
    r = http.post(f"{models_url}api/models/{name}/versions", data=tar_gz(model_dir),
                  headers={"Content-Type": "application/gzip"}, timeout=120)
    if r.status_code != 201:
        raise RuntimeError(f"uploading {name} answered {r.status_code}: {r.text[:500]}")
    version = r.json()["version"]
    r = http.put(f"{models_url}api/models/{name}/aliases/production", json={"version": version}, timeout=30)
    if r.status_code not in (200, 201, 204):
        raise RuntimeError(f"setting {name}'s production alias answered {r.status_code}: {r.text[:500]}")
    last: dict = {}

    def ready():
        r = http.get(f"{models_url}{name}/health", timeout=5)
        last["answer"] = f"{r.status_code} {r.text[:300]}"
        return r.status_code == 200 and r.json().get("status") == "ready"

    try:
        wait_until(ready, START_TIMEOUT_S, f"HubForge model {name} to be ready", interval=0.5)
    except TimeoutError as e:
        raise TimeoutError(f"{e}; last health answer: {last.get('answer')}") from None
    return version


# --- checks and load --------------------------------------------------------------------------

def check_predictions(http, url: str, headers: dict, model, X, label: str) -> None:
    """`url` must predict exactly what `model` does in-process: rows 0-4 one by one, then together."""
    for rows in ([0], [1], [2], [3], [4], [0, 1, 2, 3, 4]):
        expected = json.loads(json.dumps(model.predict(X.iloc[rows]).tolist()))
        r = http.post(url, data=body(X, rows), headers={"Content-Type": "application/json", **headers}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"{label}: rows {rows} answered {r.status_code}: {r.text[:500]}")
        got = r.json().get("predictions")
        if got != expected:
            raise RuntimeError(f"{label}: rows {rows} predicted {got!r}, the model in-process {expected!r}")


def lua_string(text: str) -> str:
    """A Lua string literal of `text`, every byte that is not plainly safe as a decimal escape."""
    safe = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.:;_-+/{}[]=()@%")
    return '"' + "".join(chr(b) if b in safe else f"\\{b}" for b in text.encode()) + '"'


WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, "connect": %.0f, "read": %.0f, '
    .. '"write": %.0f, "status": %.0f, "timeout": %.0f, "p50_us": %.1f, "p90_us": %.1f, "p99_us": %.1f, '
    .. '"mean_us": %.1f, "max_us": %.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def wrk_script(path: Path, payload: bytes, headers: dict) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(payload.decode())}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n" + WRK_DONE)
    path.chmod(0o600)  # it may hold a token
    return path


def run_wrk(url: str, script: Path, concurrency: int, seconds: float) -> dict:
    """One wrk run; its figures (latencies in ms, throughput in requests/s)."""
    threads, conns = SHAPES[concurrency]
    cmd = [WRK, f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", f"--timeout={WRK_TIMEOUT_S}s", "-s", str(script), url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=seconds + WRK_TIMEOUT_S + 60)
    finally:
        # subprocess.run leaves a child killed on Ctrl-C unreaped; this never does.
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    found = re.search(r"^WRK_RESULT (\{.*\})$", stdout, re.MULTILINE)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {stdout[-1500:]}{stderr[-1500:]}")
    raw = json.loads(found.group(1))
    errors = {k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout")}
    return {
        "requests": int(raw["requests"]), "duration_s": raw["duration_us"] / 1e6,
        "requests_per_s": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000, "max_ms": raw["max_us"] / 1000,
        "errors": errors, "failures": sum(errors.values()),
    }


def combine(runs: list[dict]) -> dict:
    """Rounds into one figure: throughput over all timed seconds, latency the rounds' median."""
    if len(runs) == 1:
        return dict(runs[0])
    requests, duration = sum(r["requests"] for r in runs), sum(r["duration_s"] for r in runs)
    out = {"requests": requests, "duration_s": duration, "requests_per_s": requests / duration}
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
        out[key] = statistics.median(r[key] for r in runs)
    out["max_ms"] = max(r["max_ms"] for r in runs)
    out["errors"] = {k: sum(r["errors"][k] for r in runs) for k in runs[0]["errors"]}
    out["failures"] = sum(out["errors"].values())
    out["rounds"] = [{k: r[k] for k in ("requests_per_s", "p50_ms", "p99_ms", "failures")} for r in runs]
    return out


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Processes (not this one) whose command line or working directory mention `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if text in cmdline or cwd.startswith(text):
            found.append((int(proc.name), cmdline[:200]))
    return found


def reap_orphans(work: Path, state: dict) -> None:
    """After everything was stopped: report, then kill, whatever still runs from the work dir."""
    left = processes_mentioning(str(work))
    if left:  # one may be exiting right now (killed with its group): look again in a moment
        time.sleep(1)
        left = processes_mentioning(str(work))
    state["left_running"] = [f"{pid}: {cmd}" for pid, cmd in left]
    for pid, cmd in left:
        print(f"warning: still running after cleanup, killing it: {pid} {cmd}", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the run ----------------------------------------------------------------------------------

def run(args, cleanup: list) -> dict:
    spawn = _spawn_helpers()
    import requests

    work = Path(tempfile.mkdtemp(prefix="hubforge-bench-serving-"))
    state: dict = {"left_running": []}
    if args.keep:
        cleanup.append(lambda: print(f"kept {work}", file=sys.stderr))
    else:
        cleanup.append(lambda: shutil.rmtree(work, ignore_errors=True))
    cleanup.append(lambda: reap_orphans(work, state))

    venv = ensure_mlflow_venv(Path(args.mlflow_venv).expanduser())
    print("building and saving the models ...", file=sys.stderr)
    (work / "models").mkdir()
    built = build_models(work / "models")

    http = requests.Session()  # for set-up and checks only; the load is wrk's
    cleanup.append(http.close)
    targets: dict[tuple[str, str], dict] = {}  # (system, model) -> url, headers

    print("starting mlflow models serve for each model ...", file=sys.stderr)
    servers = {}
    for name in MODELS:
        (work / "mlflow" / name).mkdir(parents=True)
        servers[name] = MLflowServer(venv, built[name]["dir"], work / "mlflow" / name / "mlflow.log",
                                     args.mlflow_workers)
        cleanup.append(servers[name].stop)
    for name in MODELS:
        servers[name].wait_ready(http)
        targets["mlflow", name] = {"url": servers[name].url + "invocations", "headers": {}}

    print("starting a HubForge hub and publishing the models ...", file=sys.stderr)
    hub, token = start_hubforge(work / "hub", cleanup)
    auth = {"Authorization": f"token {token}"}
    hub_http = requests.Session()
    hub_http.headers.update(auth)
    cleanup.append(hub_http.close)  # runs before hub.stop
    models_url = f"{hub.url}services/models/"
    for name in MODELS:
        publish(hub_http, models_url, name, built[name]["dir"])
        targets["hubforge", name] = {"url": f"{models_url}{name}/predict", "headers": auth}

    print("checking that both systems predict what the models predict in-process ...", file=sys.stderr)
    for (system, name), t in targets.items():
        check_predictions(http, t["url"], t["headers"], built[name]["model"], built[name]["X"],
                          f"{LABELS[system]} {name}")
        t["script"] = wrk_script(work / f"wrk-{system}-{name}.lua", body(built[name]["X"], [0]), t["headers"])

    load_before = spawn.load_1m()
    results: dict = {name: {c: {s: [] for s in SYSTEMS} for c in SHAPES} for name in MODELS}
    for i in range(args.rounds):
        order = SYSTEMS if i % 2 == 0 else SYSTEMS[::-1]
        for name in MODELS:
            for c in SHAPES:
                for system in order:
                    t = targets[system, name]
                    if args.warmup:
                        run_wrk(t["url"], t["script"], c, args.warmup)
                    fig = run_wrk(t["url"], t["script"], c, args.duration)
                    results[name][c][system].append(fig)
                    print(f"[round {i + 1}/{args.rounds}] {name:8} c={c:<2} {LABELS[system]:8} "
                          f"{fig['requests_per_s']:8.1f} req/s  p50 {fig['p50_ms']:7.2f} ms  "
                          f"p99 {fig['p99_ms']:7.2f} ms  failures {fig['failures']}", file=sys.stderr)
    load_after = spawn.load_1m()
    return {"results": results, "state": state, "venv": str(venv),
            "load_before": load_before, "load_after": load_after}


# --- the report -------------------------------------------------------------------------------

def versions(venv: str) -> dict:
    from importlib.metadata import version

    out = {"hubforge_" + p: version(p) for p in ("jupyterhub", "scikit-learn", "pandas", "numpy", "mlflow-skinny")}
    out.update({"mlflow_env_" + p: v for p, v in (venv_versions(Path(venv)) or {}).items()})
    r = subprocess.run([WRK, "-v"], check=False, capture_output=True, text=True, timeout=10)
    out["wrk"] = (r.stdout + r.stderr).split("Copyright")[0].strip()
    out["python"] = platform.python_version()
    return out


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def rounded(fig: dict) -> dict:
    out = {}
    for k, v in fig.items():
        out[k] = round(v, 3) if isinstance(v, float) else [rounded(x) for x in v] if isinstance(v, list) else v
    return out


def report(args, res: dict) -> dict:
    spawn = _spawn_helpers()
    verdict = {True: "met", False: "NOT met"}
    fig: dict = {"benchmark": "serving", "duration_s": args.duration, "warmup_s": args.warmup,
                 "rounds": args.rounds, "mlflow_workers": args.mlflow_workers,  # null: MLflow's default (1 in 3.17)
                 "wrk_shapes": {f"c{c}": f"-t{t} -c{n}" for c, (t, n) in SHAPES.items()}, "models": {}}
    total_failures = 0
    order = "" if args.rounds == 1 else f", {args.rounds} rounds alternating the order"
    print(f"\nSingle-row predictions, wrk for {args.duration:g} s per run after {args.warmup:g} s untimed{order}:")
    workers = f"--workers {args.mlflow_workers}" if args.mlflow_workers else "its default workers"
    print(f"  MLflow: mlflow models serve --env-manager local, {workers}; HubForge: predict through the hub's "
          "proxy with a user token")
    for name in MODELS:
        what = ("sklearn Pipeline: ColumnTransformer(StandardScaler, OneHotEncoder) + LogisticRegression, "
                "mixed-type columns" if name == "pipeline" else "LogisticRegression on 8 float columns")
        print(f"\n{name} ({what})")
        fig["models"][name] = {}
        for c, (threads, conns) in SHAPES.items():
            per = {s: combine(res["results"][name][c][s]) for s in SYSTEMS}
            m, h = per["mlflow"], per["hubforge"]
            entry = {s: rounded(per[s]) for s in SYSTEMS}
            entry["ratio_throughput_hubforge_over_mlflow"] = round(h["requests_per_s"] / m["requests_per_s"], 2)
            entry["ratio_p50_hubforge_over_mlflow"] = round(h["p50_ms"] / m["p50_ms"], 3)
            entry["ratio_p99_hubforge_over_mlflow"] = round(h["p99_ms"] / m["p99_ms"], 3)
            fig["models"][name][f"c{c}"] = entry
            total_failures += m["failures"] + h["failures"]
            print(f"  concurrency {c} (wrk -t{threads} -c{conns}):")
            print(f"    {'':20}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'failures':>10}")
            for s in SYSTEMS:
                f = per[s]
                failed = ", ".join(f"{k} {v}" for k, v in f["errors"].items() if v)
                print(f"    {LABELS[s]:20}{f['requests_per_s']:12.1f}{f['p50_ms']:10.2f}{f['p99_ms']:10.2f}"
                      f"{f['failures']:10d}" + (f"  ({failed})" if failed else ""))
            print(f"    {'HubForge / MLflow':20}{entry['ratio_throughput_hubforge_over_mlflow']:11.2f}x"
                  f"{entry['ratio_p50_hubforge_over_mlflow']:9.2f}x{entry['ratio_p99_hubforge_over_mlflow']:9.2f}x")

    goals = {}
    for name in MODELS:
        c10, c1 = fig["models"][name]["c10"], fig["models"][name]["c1"]
        need = GOAL_THROUGHPUT[name]
        goals[f"goal_{name}_c10_throughput_{need:g}x_mlflow"] = (
            c10["ratio_throughput_hubforge_over_mlflow"] >= need,
            f"at concurrency 10, HubForge's throughput on {name} at least {need:g}x MLflow's",
            f"{c10['ratio_throughput_hubforge_over_mlflow']:.2f}x")
        goals[f"goal_{name}_c10_p99_under_{GOAL_P99_MS:g}ms"] = (
            c10["hubforge"]["p99_ms"] < GOAL_P99_MS,
            f"at concurrency 10, HubForge's p99 on {name} under {GOAL_P99_MS:g} ms",
            f"{c10['hubforge']['p99_ms']:.2f} ms")
        goals[f"goal_{name}_c1_p50_at_most_mlflow"] = (
            c1["hubforge"]["p50_ms"] <= c1["mlflow"]["p50_ms"],
            f"at concurrency 1, HubForge's p50 on {name} at most MLflow's",
            f"{c1['hubforge']['p50_ms']:.2f} ms against {c1['mlflow']['p50_ms']:.2f} ms")
    goals["goal_no_failed_requests"] = (
        total_failures == 0,
        "no failed request (socket error, timeout, HTTP status >= 400) in any timed run",
        f"{total_failures} failed")
    print()
    for key, (met, what, value) in goals.items():
        fig[key] = met
        print(f"  goal, {what}: {verdict[met]} ({value})")
    fig["all_goals_met"] = all(met for met, _, _ in goals.values())
    print(f"  load average (1 min): {res['load_before']:.2f} before the timed runs, {res['load_after']:.2f} after")
    left = res["state"]["left_running"]
    print(f"  processes left running after cleanup: {len(left)}" + (" (killed; see stderr)" if left else ""))

    fig["total_failures"] = total_failures
    fig["left_running_after_cleanup"] = left
    fig["mlflow_command"] = ("mlflow models serve -m DIR --env-manager local --host 127.0.0.1 -p PORT"
                             + (f" --workers {args.mlflow_workers}" if args.mlflow_workers else ""))
    fig["load_1m_before"], fig["load_1m_after"] = res["load_before"], res["load_after"]
    fig["versions"] = versions(res["venv"])
    fig["machine"] = {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                      "cpu_model": cpu_model(), "platform": platform.platform(), "root": os.geteuid() == 0,
                      "description": spawn.machine()}
    fig["date"] = date.today().isoformat()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Serve the same two scikit-learn models (a mixed-type Pipeline and a numeric "
                    "LogisticRegression) with `mlflow models serve` and with HubForge's models service "
                    "(real hub, through its proxy with a user token), drive both with wrk with single-row "
                    "requests at concurrency 1 and 10, and print requests/s, p50 and p99 for each, the "
                    "ratios and the goals. The last output line is a JSON object with the figures.",
    )
    parser.add_argument("--duration", type=float, default=15, help="seconds of each timed wrk run (default 15)")
    parser.add_argument("--warmup", type=float, default=3,
                        help="seconds of the untimed wrk run before each timed one, same shape (default 3; 0: none)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="timed runs per system, model and concurrency; above 1 the order of the systems "
                             "alternates between rounds (default 1)")
    parser.add_argument("--mlflow-venv", default=DEFAULT_MLFLOW_VENV,
                        help="virtual environment with the full mlflow package, created there if missing or if "
                             "its versions differ from HubForge's environment (default %(default)s)")
    parser.add_argument("--mlflow-workers", type=int, default=None,
                        help="pass --workers N to mlflow models serve (default: MLflow's own default)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (models, Lua scripts, mlflow and hub logs) and print it")
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 600:
        parser.error("--duration must be between 1 and 600 seconds")
    if not 0 <= args.warmup <= 120:
        parser.error("--warmup must be between 0 and 120 seconds")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    if args.mlflow_workers is not None and not 1 <= args.mlflow_workers <= 64:
        parser.error("--mlflow-workers must be between 1 and 64")
    if not os.access(WRK, os.X_OK):
        parser.error(f"wrk not found (looked for {WRK}); on Debian: apt-get install wrk")
    # Cleanup closes the HTTP sessions, stops the hub (its proxy, services and model
    # workers) and the MLflow servers, reports leftovers, then removes the directory.
    return _spawn_helpers().run_with_cleanup(run, args, report)


if __name__ == "__main__":
    sys.exit(main())
