"""Restarts lose nothing: ``kill -9`` the jobs service mid-run, start the platform again.

A hub of its own whose jobs database is the test PostgreSQL (``HUBFORGE_TEST_PG_URL``;
skipped without one). After the kill the definitions and history are intact, the
interrupted run is marked failed and retried as its job says, and the orphaned kernel
is killed when the service starts again.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path

import nbformat
import pytest
from hubprocess import Browserless, HubProcess, wait_for
from sqlalchemy import text

from hubforge.jobs.db import make_engine

pytestmark = pytest.mark.slow
PG_URL = os.environ.get("HUBFORGE_TEST_PG_URL", "")
PREFIX = "hfrst-"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def descendants(root: int) -> dict[int, str]:
    """``{pid: command line}`` of every process below `root`."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {}, {root}
    while frontier:
        children = {p for p, parent in parents.items() if parent in frontier and p not in found}
        found.update({p: commands.get(p, "") for p in children})
        frontier = children
    return found


@pytest.fixture(scope="module")
def pg_hub(tmp_path_factory):
    if not PG_URL:
        pytest.skip("HUBFORGE_TEST_PG_URL is not set (no test PostgreSQL)")
    engine = make_engine(PG_URL)
    with engine.begin() as c:
        for table in ("runs", "leases", "jobs", "alembic_version"):
            c.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    engine.dispose()
    homes = tempfile.mkdtemp(prefix="hubforge-homes-")
    os.chmod(homes, 0o755)
    hub = HubProcess(tmp_path_factory.mktemp("pghub"), local={"system_user_prefix": PREFIX, "home_root": homes},
                     dask={"enabled": False}, jobs={"db_url": PG_URL})
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
        import subprocess

        subprocess.run(["userdel", "--remove", f"{PREFIX}restarter"], capture_output=True, timeout=30)


def test_kill_9_mid_run_then_restart(pg_hub):
    hub = pg_hub
    assert Browserless(hub).signup("admin", "restart-admin-pw-1").status_code == 200
    token = hub.make_user(hub.token("admin"), "restarter")

    def api(method, path, **kw):
        return hub.service_request(method, "jobs", path, token, **kw)

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("n = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os, time\nopen('kernel.pid', 'w').write(str(os.getpid()))\n"
                                  "while not os.path.exists('resume.ok'):\n    time.sleep(0.2)\nprint('resumed', n)"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    r = api("POST", "api/jobs", json={"notebook": {"path": "r.ipynb", "content": json.loads(nbformat.writes(nb))},
                                      "name": "survivor", "parameters": {"n": 7}, "retries": 1, "retry_backoff": 0,
                                      "trigger": {"type": "cron", "cron": "0 0 1 1 *"}})
    assert r.status_code == 201, r.text
    job = r.json()
    run = api("POST", f"api/jobs/{job['id']}/runs", json={}).json()
    home = Path(hub.settings["local"]["home_root"]) / f"{PREFIX}restarter"
    wait_for(lambda: (home / "kernel.pid").exists(), 60, what="the run's kernel to start")
    kernel = int((home / "kernel.pid").read_text())

    service = [p for p, cmd in descendants(hub.proc.pid).items() if cmd.endswith("-m hubforge.jobs ")]
    assert len(service) == 1, service
    os.kill(service[0], signal.SIGKILL)
    wait_for(lambda: not alive(service[0]) or open(f"/proc/{service[0]}/stat").read().split()[2] == "Z", 10,
             what="the service to die")
    assert alive(kernel)  # orphaned: nobody is watching it now
    (home / "kernel.pid").unlink()
    hub.stop()
    (home / "resume.ok").write_text("")
    os.chmod(home / "resume.ok", 0o644)
    hub.start()

    wait_for(lambda: not alive(kernel), 60, what="the orphaned kernel to be killed at the service's start")
    try:
        wait_for(lambda: api("GET", f"api/jobs/{job['id']}").ok, 30, what="the service to answer")
    except TimeoutError:
        print([line for line in hub.log().splitlines() if "Jobs" in line or "jobs" in line][-40:])
        raise
    again = api("GET", f"api/jobs/{job['id']}").json()
    assert {k: again[k] for k in ("name", "parameters", "retries", "trigger")} == {
        "name": "survivor", "parameters": {"n": 7}, "retries": 1,
        "trigger": {"type": "cron", "cron": "0 0 1 1 *", "timezone": "UTC"}}

    def settled():
        runs = api("GET", f"api/jobs/{job['id']}/runs").json()["runs"]
        return runs if len(runs) == 2 and runs[0]["status"] in ("succeeded", "failed") else None

    runs = wait_for(settled, 90, what="the retry to finish")
    interrupted, retry = runs[1], runs[0]
    assert interrupted["id"] == run["id"] and interrupted["status"] == "failed"
    assert interrupted["reason"] == "the jobs service stopped during the run"
    assert (retry["trigger"], retry["attempt"], retry["status"]) == ("retry", 2, "succeeded")
    out = api("GET", f"api/runs/{retry['id']}/output").json()
    assert "resumed 7" in json.dumps(out)
