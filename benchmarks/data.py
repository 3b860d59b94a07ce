"""Data preview latency: HubForge's preview endpoint against pandas (and DuckDB alone), in one run.

The task: the schema and the first 100 rows of a 10-million-row Parquet file. Timed,
on the same file, side by side:

* **hubforge**: what a notebook's data browser does. A real hub (HubForge's own
  ``hub_config/jupyterhub_config.py`` through ``tests/hubprocess.py``, with its
  configurable-http-proxy) runs the real ``data`` service with a catalogue written
  for this run, holding one ``files`` connection (``file://`` URL of a temporary
  folder that holds the file). The hub user ``hfdata`` gets a server (profile
  ``cpu-small``, ``shared`` isolation unless ``--isolation system-users``), and each
  repetition is one ``GET {server}/hubforge/api/data/connections/bench-files/preview
  ?path=big.parquet&limit=100`` through the proxy with the user's API token, the JSON
  body read and parsed: HTTP hop, token check, the server extension, credentials from
  the data service (cached after the first call) and DuckDB in the server process.
  One ``requests`` session, so the TCP connection is reused, as a browser does;
* **pandas**: ``pandas.read_parquet(path).head(100)`` in this process;
* **duckdb**: ``SELECT * FROM read_parquet(path) LIMIT 100`` into an Arrow table
  (schema and rows) in this process, on one in-memory connection with a cursor per
  call, as the server extension does: the engine alone, for reference;
* **roundtrip**: ``GET {server}/api/status`` with the same token and session: the
  HTTP hop and the token check alone, for reference.

The file (11 columns of mixed types: integers, doubles, a decimal, dates, timestamps,
booleans, text of low and high cardinality, a column with nulls; DuckDB's default
row groups of 122,880 rows) is generated with DuckDB once and cached in
``--cache-dir`` (default ``$TMPDIR/hubforge-bench-cache``) for later runs; the
connection's folder gets a hard link to it. ``--no-cache`` generates it in the run's
temporary directory instead. All timings see the file in the page cache (it was just
written or read).

Each measure gets one untimed warm-up call first, reported as "first call": for
HubForge that is the server's first preview (it imports DuckDB, fetches the
connection's credentials from the data service and opens the file), for pandas the
first full read. The timed calls then run in interleaved rounds (hubforge, duckdb,
roundtrip, pandas; the fewer pandas calls spread evenly over the rounds) so machine
noise falls on all alike. The server runs in its profile's cgroup (1 CPU, 2 GiB) when
cgroups are available; pandas and DuckDB here are not limited.

Everything it creates (hub, proxy, data service, the server, with
``--isolation system-users`` the system user ``hfb-hfdata``, temporary directories
unless ``--keep``) is removed on exit, Ctrl-C and errors included; only the cached
Parquet file stays. The last line of output is one JSON object with the figures.

    .venv/bin/python benchmarks/data.py                       # 20 HubForge, 5 pandas calls
    .venv/bin/python benchmarks/data.py --repeat 3 --pandas-repeat 1 --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HUBFORGE_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hubprocess import Browserless, HubProcess  # noqa: E402
from spawn import load_1m, machine, percentile, remove_user, run_with_cleanup, user_exists  # noqa: E402

USER = "hfdata"
HF_PREFIX = "hfb-"
ADMIN_PASSWORD = "bench-horse-battery-9"
CONNECTION = "bench-files"
FILE = "big.parquet"
LIMIT = 100
ROWS = 10_000_000
PROFILE = "cpu-small"
#: Bump when the generated file's columns change, so a stale cache is not reused.
DATA_VERSION = 1
MEASURES = {
    "hubforge": "HubForge preview endpoint (proxy, auth, server)",
    "duckdb": "DuckDB alone, in this process",
    "pandas": f"pandas.read_parquet(path).head({LIMIT})",
    "roundtrip": "HTTP round trip alone (GET api/status)",
}

GENERATE_SQL = """\
COPY (
    SELECT
        range AS id,
        CAST(range % 100000 AS INTEGER) AS customer_id,
        ((range * 7919) % 1000003) / 100.0 AS amount,
        CAST((range % 10000) / 100 AS DECIMAL(10, 2)) AS unit_price,
        CASE WHEN range % 10 = 0 THEN NULL ELSE CAST(range % 7 AS SMALLINT) END AS discount,
        'product-' || CAST(range % 1000 AS VARCHAR) AS product,
        ['north', 'south', 'east', 'west'][CAST(range % 4 AS INTEGER) + 1] AS region,
        DATE '2020-01-01' + CAST(range % 2000 AS INTEGER) AS order_date,
        TIMESTAMP '2020-01-01 00:00:00' + to_seconds(range) AS created_at,
        range % 3 = 0 AS returned,
        md5(CAST(range AS VARCHAR)) AS note
    FROM range({rows})
) TO '{path}' (FORMAT parquet)
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the file -------------------------------------------------------------------------

def parquet_rows(path: Path) -> int | None:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:
        return None


def ensure_file(folder: Path, rows: int) -> Path:
    """The Parquet file of `rows` rows in `folder`: reused if there, else generated."""
    import duckdb

    path = folder / f"bench-{rows}-v{DATA_VERSION}.parquet"
    if path.exists() and parquet_rows(path) == rows:
        say(f"using the cached {path} ({path.stat().st_size / 2**20:.0f} MiB)")
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{path.name}.{os.getpid()}.partial"
    say(f"generating {rows:,} rows into {path} ...")
    t = time.monotonic()
    try:
        con = duckdb.connect(":memory:")
        con.execute(GENERATE_SQL.format(rows=int(rows), path=str(partial).replace("'", "''")))
        con.close()
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    say(f"  done in {time.monotonic() - t:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)")
    return path


def link_into(source: Path, dest: Path) -> None:
    """Hard link `source` as `dest` (a copy when they are on different filesystems)."""
    try:
        os.link(source, dest)
    except OSError:
        say(f"  (cannot hard link {source} into {dest.parent}; copying it)")
        shutil.copyfile(source, dest)
        os.chmod(dest, 0o644)


# --- the hub --------------------------------------------------------------------------

def start_hub(args, work: Path, files: Path, cleanup: list) -> dict:
    """A hub with the data service, the user USER with a running server; its handles."""
    catalogue = work / "data_connections.yaml"
    catalogue.write_text(textwrap.dedent(f"""\
        # benchmarks/data.py: one folder, open to every hub user.
        connections:
          {CONNECTION}:
            kind: files
            description: benchmarks/data.py's generated Parquet file
            url: file://{files}/
        """))
    local: dict = {"isolation": args.isolation}
    if args.isolation == "system-users":
        homes = work / "homes"
        homes.mkdir(mode=0o755)
        local.update(system_user_prefix=HF_PREFIX, home_root=str(homes))
        cleanup.append(lambda: remove_user(HF_PREFIX + USER))
    hub = HubProcess(work / "hub", prefix="/", data_connections=str(catalogue), gpus="none",
                     local=local)
    cleanup.append(hub.stop)
    say("starting the hub (with the data service) ...")
    t = time.monotonic()
    hub.start()
    r = Browserless(hub).signup("admin", ADMIN_PASSWORD)
    r.raise_for_status()
    admin = hub.token("admin")
    r = hub.request("POST", f"/users/{USER}", admin)
    if r.status_code != 201:
        raise RuntimeError(f"creating {USER} answered {r.status_code}: {r.text[:500]}")
    r = hub.request("POST", f"/users/{USER}/tokens", admin, json={"note": "benchmarks/data.py"})
    if r.status_code != 201:
        raise RuntimeError(f"a token for {USER} answered {r.status_code}: {r.text[:500]}")
    token = r.json()["token"]
    say(f"  hub up at {hub.url} ({time.monotonic() - t:.1f} s); spawning {USER}'s server ...")
    t = time.monotonic()
    r = hub.request("POST", f"/users/{USER}/servers/", admin, json={"profile": args.profile},
                    timeout=120)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"spawn answered {r.status_code}: {r.text[:500]}")

    def stop_server():
        r = hub.request("DELETE", f"/users/{USER}/servers/", admin)
        if r.status_code in (202, 204):
            hub.wait_gone(USER, "", admin)

    cleanup.append(stop_server)
    hub.wait_ready(USER, "", admin, timeout=120)
    say(f"  server ready ({time.monotonic() - t:.1f} s)")
    return {"hub": hub, "token": token}


# --- the measures ---------------------------------------------------------------------

class Measure:
    def __init__(self, name: str, call, repeat: int):
        self.name, self.call, self.repeat = name, call, repeat
        self.times: list[float] = []
        self.first: float | None = None

    def once(self) -> float:
        t0 = time.perf_counter()
        self.call()
        return time.perf_counter() - t0


def make_measures(args, path: Path, served: dict) -> tuple[list[Measure], dict]:
    import duckdb
    import pandas as pd
    import requests

    hub, token = served["hub"], served["token"]
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    server = hub.server_url(USER)
    preview_url = f"{server}hubforge/api/data/connections/{CONNECTION}/preview"
    params = {"path": FILE, "limit": str(LIMIT)}
    last: dict = {}

    def hubforge():
        r = session.get(preview_url, params=params, timeout=120)
        if r.status_code != 200:
            raise RuntimeError(f"preview answered {r.status_code}: {r.text[:500]}")
        last["hubforge"] = r.json()

    def roundtrip():
        r = session.get(f"{server}api/status", timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"api/status answered {r.status_code}: {r.text[:500]}")
        r.json()

    con = duckdb.connect(":memory:")

    def duck():
        cursor = con.cursor()
        try:
            last["duckdb"] = cursor.sql(f"SELECT * FROM read_parquet($1) LIMIT {LIMIT}",
                                        params=[str(path)]).to_arrow_table()
        finally:
            cursor.close()

    def pandas():
        last["pandas"] = pd.read_parquet(path).head(LIMIT)

    measures = [
        Measure("hubforge", hubforge, args.repeat),
        Measure("duckdb", duck, args.repeat),
        Measure("roundtrip", roundtrip, args.repeat),
        Measure("pandas", pandas, args.pandas_repeat),
    ]
    return measures, last


def check_results(last: dict, rows: int) -> list[str]:
    """The three answers agree (names, row count, ids 0..99); problems found, if any."""
    problems = []
    body, table, frame = last["hubforge"], last["duckdb"], last["pandas"]
    names = [c["name"] for c in body["columns"]]
    want = min(LIMIT, rows)
    if names != list(frame.columns) or names != table.column_names:
        problems.append(f"columns differ: hubforge {names}, pandas {list(frame.columns)}, "
                        f"duckdb {table.column_names}")
    if len(body["rows"]) != want or len(frame) != want or table.num_rows != want:
        problems.append(f"row counts differ: hubforge {len(body['rows'])}, pandas {len(frame)}, "
                        f"duckdb {table.num_rows}")
    if body.get("truncated") is not (rows > LIMIT):
        problems.append(f"hubforge says truncated={body.get('truncated')!r}")
    ids = [row[names.index("id")] for row in body["rows"]] if "id" in names else []
    if ids != list(range(want)) or list(frame["id"]) != ids:
        problems.append("the first rows are not ids 0..99 in all three")
    return problems


def schedule(total_rounds: int, count: int) -> set[int]:
    """`count` round numbers spread evenly over `total_rounds`."""
    return {i * total_rounds // count for i in range(count)} if count else set()


def run(args, cleanup: list) -> dict:
    work = Path(tempfile.mkdtemp(prefix="hubforge-bench-data-"))
    if args.keep:
        cleanup.append(lambda: say(f"kept {work} (--keep)"))
    else:
        cleanup.append(lambda: shutil.rmtree(work, ignore_errors=True))
    # With system-users isolation the server runs as another user: every folder on
    # the way to the file must be searchable and the file readable.
    os.chmod(work, 0o755)
    cache = work / "cache" if args.no_cache else Path(args.cache_dir)
    source = ensure_file(cache, args.rows)
    files = work / "files"
    files.mkdir(mode=0o755)
    path = files / FILE
    link_into(source, path)

    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    info = {"rows": meta.num_rows, "row_groups": meta.num_row_groups,
            "columns": meta.num_columns, "file_mib": round(path.stat().st_size / 2**20, 1)}

    served = start_hub(args, work, files, cleanup)
    measures, last = make_measures(args, path, served)
    by_name = {m.name: m for m in measures}
    deadline = time.monotonic() + args.max_minutes * 60
    load_before = load_1m()

    for m in measures:  # the warm-ups: hubforge first, so it really is the server's first call
        m.first = m.once()
        say(f"[{m.name:9} first call] {m.first * 1000:9.1f} ms")
    if problems := check_results(last, info["rows"]):
        raise RuntimeError("the answers disagree: " + "; ".join(problems))

    rounds = max(m.repeat for m in measures)
    plan = {m.name: schedule(rounds, m.repeat) for m in measures}
    for r in range(rounds):
        for m in measures:
            if r not in plan[m.name]:
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"--max-minutes {args.max_minutes} reached")
            elapsed = m.once()
            m.times.append(elapsed)
            say(f"[{m.name:9} {len(m.times):3}/{m.repeat}] {elapsed * 1000:9.1f} ms")
    return {"measures": by_name, "info": info, "load_before": load_before, "load_after": load_1m()}


# --- the report -----------------------------------------------------------------------

def cgroups_available() -> bool:
    try:
        from hubforge.spawners.cgroups import CgroupManager

        return os.geteuid() == 0 and CgroupManager(parent="hubforge").available
    except Exception:
        return False


def versions() -> dict:
    import duckdb
    import pandas
    import pyarrow

    return {"duckdb": duckdb.__version__, "pandas": pandas.__version__,
            "pyarrow": pyarrow.__version__, "python": platform.python_version()}


def report(args, res: dict) -> dict:
    measures: dict[str, Measure] = res["measures"]
    info = res["info"]
    fig: dict = {"rows": info["rows"], "limit": LIMIT, "file_mib": info["file_mib"],
                 "row_groups": info["row_groups"], "columns": info["columns"],
                 "repeat": {name: m.repeat for name, m in measures.items()}}
    for name, m in measures.items():
        fig[f"{name}_p50_ms"] = round(percentile(m.times, 50) * 1000, 2)
        fig[f"{name}_p95_ms"] = round(percentile(m.times, 95) * 1000, 2)
        fig[f"{name}_min_ms"] = round(min(m.times) * 1000, 2)
        fig[f"{name}_max_ms"] = round(max(m.times) * 1000, 2)
        fig[f"{name}_first_ms"] = round(m.first * 1000, 2)
    for q in ("p50", "p95"):
        fig[f"ratio_pandas_hubforge_{q}"] = round(fig[f"pandas_{q}_ms"] / fig[f"hubforge_{q}_ms"], 1)
    fig["goal_under_100ms"] = fig["hubforge_p50_ms"] < 100 and fig["hubforge_p95_ms"] < 100
    fig["goal_4x_faster_than_pandas"] = (fig["ratio_pandas_hubforge_p50"] >= 4
                                         and fig["ratio_pandas_hubforge_p95"] >= 4)

    print(f"\nSchema + first {LIMIT} rows of a {info['rows']:,}-row Parquet file "
          f"({info['file_mib']:.0f} MiB, {info['columns']} columns, {info['row_groups']} row groups); "
          "interleaved rounds, one untimed first call each:")
    print(f"  {'':50} {'n':>3} {'p50':>10} {'p95':>10} {'min':>10} {'max':>10} {'first call':>11}")
    for name in ("hubforge", "pandas", "duckdb", "roundtrip"):
        m = measures[name]
        cells = " ".join(f"{fig[f'{name}_{k}_ms']:7.1f} ms" for k in ("p50", "p95", "min", "max"))
        print(f"  {MEASURES[name]:50} {m.repeat:3} {cells} {fig[f'{name}_first_ms']:8.1f} ms")
    print(f"  {'ratio pandas / HubForge (x faster)':50} {'':3} "
          f"{fig['ratio_pandas_hubforge_p50']:9.1f}x {fig['ratio_pandas_hubforge_p95']:9.1f}x")
    verdict = {True: "met", False: "NOT met"}
    print(f"\n  goal, HubForge under 100 ms (p50 and p95): {verdict[fig['goal_under_100ms']]}")
    print(f"  goal, at least 4x faster than pandas (p50 and p95): "
          f"{verdict[fig['goal_4x_faster_than_pandas']]}")
    server = (f"profile {args.profile}, {args.isolation} isolation, "
              + ("in a cgroup (1 CPU, 2 GiB)" if cgroups_available() else "no cgroup limits"))
    print(f"  server: {server}; pandas and DuckDB: in this process, unlimited")
    print(f"  load average (1 min): {res['load_before']:.2f} before, {res['load_after']:.2f} after")

    fig["isolation"], fig["profile"] = args.isolation, args.profile
    fig["server_cgroup"] = cgroups_available()
    fig["load_1m_before"], fig["load_1m_after"] = res["load_before"], res["load_after"]
    fig["versions"] = versions()
    fig["machine"] = machine()
    fig["date"] = date.today().isoformat()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Time a preview (schema + first {LIMIT} rows) of a large Parquet file through "
                    "HubForge's server endpoint (real hub, data service and user server, over HTTP "
                    f"through the proxy) against pandas.read_parquet(path).head({LIMIT}) and DuckDB "
                    "alone, in one run; print p50/p95, the ratio and the goal (under 100 ms, at "
                    "least 4x faster than pandas). The last output line is a JSON object with "
                    "the figures.",
    )
    parser.add_argument("--repeat", type=int, default=20,
                        help="timed HubForge previews, and as many DuckDB and round-trip calls (default 20)")
    parser.add_argument("--pandas-repeat", type=int, default=5,
                        help="timed pandas reads (default 5; each reads the whole file)")
    parser.add_argument("--rows", type=int, default=ROWS,
                        help=f"rows in the Parquet file (default {ROWS:,})")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "hubforge-bench-cache"),
                        help="where the generated file is kept between runs "
                             "(default %(default)s)")
    parser.add_argument("--no-cache", action="store_true",
                        help="generate the file in the run's temporary directory and delete it after")
    parser.add_argument("--isolation", choices=("shared", "system-users"), default="shared",
                        help="the local spawner's isolation (default shared; system-users needs "
                             f"root and creates the system user {HF_PREFIX}{USER})")
    parser.add_argument("--profile", default=PROFILE, help=f"the server's profile (default {PROFILE})")
    parser.add_argument("--max-minutes", type=float, default=20,
                        help="give up (and clean up) after this many minutes (default 20)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (hub log, catalogue, data folder)")
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 1000:
        parser.error("--repeat must be between 1 and 1000")
    if not 1 <= args.pandas_repeat <= 100:
        parser.error("--pandas-repeat must be between 1 and 100")
    if not 1000 <= args.rows <= 1_000_000_000:
        parser.error("--rows must be between 1,000 and 1,000,000,000")
    if args.isolation == "system-users":
        if os.geteuid() != 0:
            parser.error("--isolation system-users needs root")
        if user_exists(HF_PREFIX + USER):
            parser.error(f"system user {HF_PREFIX}{USER} already exists (left by an earlier run?); "
                         f"remove it with: userdel --remove {HF_PREFIX}{USER}")

    # Cleanup stops the server, then the hub (with its proxy and data service), then
    # removes the system user and the directories.
    return run_with_cleanup(run, args, report)

if __name__ == "__main__":
    sys.exit(main())
