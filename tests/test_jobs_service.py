"""The ``jobs`` hub service end to end: a real hub, papermill on real kernels, real files.

Covers what a user does (schedule a notebook, run it now, read its output and log,
pause, resume, edit, cancel, delete), what happens to runs (parameters injected, a
failing cell, a timeout that kills the kernel, large output, retries, the concurrency
limit, webhooks, retention, watch triggers), who may do what (owner, another user,
admin, anonymous, a token without the scopes, on every endpoint) and bad input (400
with the field, never a 500).
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import pwd
import threading
import time
from pathlib import Path

import nbformat
import pytest
from conftest import TEST_PREFIX
from hubprocess import wait_for

from hubforge.spawners.local import system_user_name

pytestmark = pytest.mark.slow

FINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def notebook(*cells: str, parameters: str | None = "n = 2", kernel: str = "python3") -> dict:
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    if kernel:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    return json.loads(nbformat.writes(nb))


TRIVIAL = notebook("print(n * 21)")
NEVER = {"type": "cron", "cron": "0 0 1 1 *"}  # a cron job that will not fire in a test


@pytest.fixture(scope="module")
def users(hub, admin_token):
    """Two users with tokens: ``owner`` and ``other``, plus the admin's token."""
    return {
        "owner": ("jobber", hub.make_user(admin_token, "jobber")),
        "other": ("jobother", hub.make_user(admin_token, "jobother")),
        "admin": ("admin", admin_token),
    }


@pytest.fixture
def api(hub):
    def call(method, path, token=None, **kw):
        r = hub.service_request(method, "jobs", path, token, **kw)
        if r.status_code >= 500:  # show why, from the service's log in the hub's
            print(hub.log()[-6000:])
        return r

    return call


def create(api, token, nb=TRIVIAL, **fields) -> dict:
    body = {"notebook": {"path": fields.pop("path", "jobs-test/t.ipynb"), "content": nb}, **fields}
    r = api("POST", "api/jobs", token, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def run_now(api, token, job_id, **parameters) -> dict:
    r = api("POST", f"api/jobs/{job_id}/runs", token, json={"parameters": parameters} if parameters else {})
    assert r.status_code == 201, r.text
    return r.json()


def wait_run(api, token, run_id, timeout=90) -> dict:
    def final():
        run = api("GET", f"api/runs/{run_id}", token).json()
        return run if run["status"] in FINAL else None

    return wait_for(final, timeout, interval=0.1, what=f"run {run_id} to finish")


def first_run(api, token, job_id, timeout=90) -> dict:
    runs = wait_for(lambda: api("GET", f"api/jobs/{job_id}/runs", token).json()["runs"], timeout, what="a run")
    return wait_run(api, token, runs[-1]["id"], timeout)


def output(api, token, run_id) -> dict:
    r = api("GET", f"api/runs/{run_id}/output", token)
    assert r.status_code == 200, (r.text, api("GET", f"api/runs/{run_id}", token).json(),
                                  api("GET", f"api/runs/{run_id}/log", token).text[-3000:])
    return r.json()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def home_of(name: str) -> Path:
    return Path(pwd.getpwnam(system_user_name(TEST_PREFIX, name)).pw_dir)


# --- running notebooks -----------------------------------------------------------------


def test_run_once_injects_parameters_and_runs_as_the_user(api, users):
    _, token = users["owner"]
    nb = notebook("import os\nprint(n * 21)\nprint(os.getuid(), os.getcwd())\nprint('token' in str(os.environ).lower())")
    job = create(api, token, nb, parameters={"n": 3}, name="once-params")
    assert job["notebook_parameters"] == [{"name": "n", "type": "int", "default": "2", "help": ""}]
    run = first_run(api, token, job["id"])
    assert run["status"] == "succeeded", (run, api("GET", f"api/runs/{run['id']}/log", token).text)
    assert run["trigger"] == "once" and run["parameters"] == {"n": 3}
    assert run["progress"] == {"cell": 3, "cells": 3}
    out = output(api, token, run["id"])
    injected = out["cells"][1]
    assert "injected-parameters" in injected["metadata"]["tags"] and "n = 3" in "".join(injected["source"])
    lines = "".join(out["cells"][2]["outputs"][0]["text"]).split("\n")
    account = pwd.getpwnam(system_user_name(TEST_PREFIX, "jobber"))
    assert lines[0] == "63"
    # As the user's system account, in their home (the notebook's folder, jobs-test/,
    # does not exist there), with no token in the environment.
    assert lines[1] == f"{account.pw_uid} {account.pw_dir}"
    assert lines[2] == "False"
    assert out["metadata"]["papermill"]["parameters"] == {"n": 3}
    log = api("GET", f"api/runs/{run['id']}/log", token)
    assert log.status_code == 200 and "Executing Cell 3" in log.text


def test_output_matches_papermill(api, users, tmp_path):
    """The output notebook has the content papermill itself writes for the same input."""
    import papermill

    _, token = users["owner"]
    nb = notebook("x = [n] * 3\nx", "print('hello', n)\nfrom IPython.display import HTML\nHTML('<b>bold</b>')")
    job = create(api, token, nb, trigger=NEVER, name="vs-papermill")
    run = wait_run(api, token, run_now(api, token, job["id"], n=5)["id"])
    ours = output(api, token, run["id"])
    (tmp_path / "in.ipynb").write_text(json.dumps(nb))
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), parameters={"n": 5},
                               progress_bar=False, cwd=str(tmp_path))
    theirs = json.loads((tmp_path / "out.ipynb").read_text())

    def content(doc):
        return [(c["cell_type"], "".join(c["source"]), c["metadata"].get("tags"),
                 [{k: v for k, v in o.items() if k != "execution_count"} for o in c.get("outputs", [])])
                for c in doc["cells"]]

    assert content(ours) == content(theirs)
    assert ours["metadata"]["papermill"]["parameters"] == theirs["metadata"]["papermill"]["parameters"]


def test_failing_cell_fails_the_run_and_marks_the_cell(api, users):
    _, token = users["owner"]
    job = create(api, token, notebook("print('before')", "1 / 0", "print('never')"), name="failing")
    run = first_run(api, token, job["id"])
    assert run["status"] == "failed"
    assert "ZeroDivisionError" in run["reason"]
    out = output(api, token, run["id"])
    text = json.dumps(out)
    assert "An Exception was encountered" in text  # papermill's banner
    failing = [c for c in out["cells"] if "1 / 0" in "".join(c["source"])][0]
    assert failing["outputs"][0]["output_type"] == "error"
    assert not [c for c in out["cells"] if "never" in "".join(c["source"])][0]["outputs"]


def test_timeout_kills_the_run_and_its_kernel(api, users):
    _, token = users["owner"]
    nb = notebook("import os\nopen('kernel.pid', 'w').write(str(os.getpid()))\nprint('started')",
                  "import time\ntime.sleep(600)", parameters=None)
    # A run first, so that the slow one starts on a warm runner (the timeout counts the
    # kernel's start, which on a busy 2-core machine takes seconds when cold).
    first_run(api, token, create(api, token, name="warm-before-slow")["id"])
    job = create(api, token, nb, timeout=4, name="slow", path="slow.ipynb")
    run = first_run(api, token, job["id"], timeout=60)
    assert run["status"] == "timed_out" and run["reason"] == "timed out after 4 s", run
    pid = int((home_of("jobber") / "kernel.pid").read_text())
    wait_for(lambda: not alive(pid), 10, what=f"kernel {pid} to be gone")
    out = output(api, token, run["id"])  # the partial output, with why it stopped
    assert "timed out after 4 s" in "".join(out["cells"][0]["source"])
    assert "started" in json.dumps(out)


def test_large_output_is_kept(api, users):
    _, token = users["owner"]
    job = create(api, token, notebook("print('x' * 4_000_000)"), name="large")
    run = first_run(api, token, job["id"])
    assert run["status"] == "succeeded", run
    r = api("GET", f"api/runs/{run['id']}/output", token)
    assert len(r.content) > 4_000_000


def test_retries_back_off_then_give_up(api, users):
    _, token = users["owner"]
    job = create(api, token, notebook("raise RuntimeError('flaky')"), retries=2, retry_backoff=0.2, name="flaky")

    def three_done():
        runs = api("GET", f"api/jobs/{job['id']}/runs", token).json()["runs"]
        return runs if len(runs) == 3 and all(r["status"] in FINAL for r in runs) else None

    runs = wait_for(three_done, 90, what="three attempts")
    assert [r["attempt"] for r in reversed(runs)] == [1, 2, 3]
    assert [r["trigger"] for r in reversed(runs)] == ["once", "retry", "retry"]
    assert all(r["status"] == "failed" and "flaky" in r["reason"] for r in runs)
    # A retry is queued in the same transaction that ends its run: none is coming.
    assert len(api("GET", f"api/jobs/{job['id']}/runs", token).json()["runs"]) == 3


def test_concurrency_limit_queues_runs(api, users):
    """At most max_concurrent_runs_per_user (2) of one user's runs execute at once."""
    _, token = users["owner"]
    job = create(api, token, notebook("import time\ntime.sleep(1.5)"), trigger=NEVER, name="queued")
    runs = [run_now(api, token, job["id"])["id"] for _ in range(4)]
    most, saw_queue = 0, False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        # One request, so one snapshot of the four (the runs change between requests).
        listed = {r["id"]: r["status"] for r in api("GET", f"api/runs?job={job['id']}", token).json()["runs"]}
        states = [listed[r] for r in runs]
        most = max(most, states.count("running"))
        saw_queue = saw_queue or (states.count("running") == 2 and "queued" in states)
        if all(s in FINAL for s in states):
            break
        time.sleep(0.1)
    assert states == ["succeeded"] * 4
    assert most == 2 and saw_queue


def test_cancel_running_and_queued_runs(api, users):
    _, token = users["owner"]
    nb = notebook("import os\nopen('cancel.pid', 'w').write(str(os.getpid()))", "import time\ntime.sleep(600)",
                  parameters=None)
    job = create(api, token, nb, trigger=NEVER, name="cancel-me", path="c.ipynb")
    run = run_now(api, token, job["id"])
    pidfile = home_of("jobber") / "cancel.pid"
    wait_for(lambda: api("GET", f"api/runs/{run['id']}", token).json()["progress"] == {"cell": 2, "cells": 2}
             and pidfile.exists(), 60, what="the run to reach its sleep")
    pid = int(pidfile.read_text())
    r = api("POST", f"api/runs/{run['id']}/cancel", token)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["reason"] == "cancelled by jobber"
    wait_for(lambda: not alive(pid), 10, what="the cancelled run's kernel to be gone")
    again = api("POST", f"api/runs/{run['id']}/cancel", token)
    assert again.status_code == 409 and "nothing to cancel" in again.json()["message"]


class Hooks(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hooks.received.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        """Quiet: the test reads what arrived from `received`."""


def test_webhooks_on_failure_and_success_never_log_the_url(api, users, hub):
    _, token = users["owner"]
    server = http.server.HTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret_path = "/hooks/s3cr3t-webhook-path"
    url = f"http://127.0.0.1:{server.server_port}{secret_path}"
    try:
        job = create(api, token, notebook("assert n != 0"), trigger=NEVER, name="hooked",
                     notify={"url": url, "on": ["failure", "success"]})
        wait_run(api, token, run_now(api, token, job["id"], n=1)["id"])
        wait_run(api, token, run_now(api, token, job["id"], n=0)["id"])
        wait_for(lambda: len(Hooks.received) >= 2, 30, what="two webhooks")
    finally:
        server.shutdown()
    events = sorted(body["event"] for _, body in Hooks.received)
    assert events == ["run.failed", "run.succeeded"]
    assert all(path == secret_path for path, _ in Hooks.received)
    assert Hooks.received[0][1]["job"]["name"] == "hooked" and "notify" not in Hooks.received[0][1]["job"]
    assert "s3cr3t-webhook-path" not in hub.log()
    # Only the owner (and admins) see the URL.
    other = users["other"][1]
    assert api("GET", f"api/jobs/{job['id']}", other).status_code == 404


def test_retention_keeps_the_newest_runs(api, users):
    _, token = users["owner"]
    job = create(api, token, trigger=NEVER, retention={"keep_runs": 2}, name="retained")
    ids = [wait_run(api, token, run_now(api, token, job["id"], n=i)["id"])["id"] for i in range(4)]
    runs = api("GET", f"api/jobs/{job['id']}/runs", token).json()["runs"]
    assert [r["id"] for r in runs] == ids[:1:-1]
    assert api("GET", f"api/runs/{ids[0]}", token).status_code == 404
    assert api("GET", f"api/runs/{ids[0]}/output", token).status_code == 404


def test_cron_job_pause_resume_and_edit(api, users):
    _, token = users["owner"]
    job = create(api, token, trigger={"type": "cron", "cron": "0 6 * * *", "timezone": "Europe/Paris"}, name="daily")
    assert job["next_run"].endswith(("04:00:00Z", "05:00:00Z"))  # 06:00 in Paris, in UTC
    assert job["trigger_description"] == "cron 0 6 * * * (Europe/Paris)"
    assert api("GET", f"api/jobs/{job['id']}/runs", token).json()["runs"] == []
    paused = api("POST", f"api/jobs/{job['id']}/pause", token).json()
    assert paused["paused"] is True
    resumed = api("POST", f"api/jobs/{job['id']}/resume", token).json()
    assert resumed["paused"] is False
    edited = api("PATCH", f"api/jobs/{job['id']}", token, json={"trigger": {"cron": "30 7 * * 1", "timezone": "UTC"},
                                                                   "parameters": {"n": 7}, "timeout": 60})
    assert edited.status_code == 200, edited.text
    assert edited.json()["next_run"].endswith("07:30:00Z") and edited.json()["parameters"] == {"n": 7}
    bad = api("PATCH", f"api/jobs/{job['id']}", token, json={"trigger": {"cron": "every day"}})
    assert bad.status_code == 400 and bad.json()["message"].startswith("trigger.cron:")


def test_watch_trigger_runs_once_per_new_file(api, users):
    _, token = users["owner"]
    name, _ = users["owner"]
    # A first run creates the account and home; the watch starts from what is there.
    create(api, token, name="make-home")
    wait_for(lambda: home_of(name).is_dir(), 60, what="the user's home")
    incoming = home_of(name) / "incoming"
    incoming.mkdir(exist_ok=True)
    account = pwd.getpwnam(system_user_name(TEST_PREFIX, name))
    os.chown(incoming, account.pw_uid, account.pw_gid)
    (incoming / "old.csv").write_text("a\n1\n")
    nb = notebook("print('got', trigger_file, open(os.path.join(os.environ['HOME'], trigger_file)).read().count('\\n'))",
                  parameters="import os\ntrigger_file = ''")
    job = create(api, token, nb, trigger={"type": "watch", "path": "incoming/*.csv"}, name="on-csv")
    assert job["watched_files"] is None

    def seen(count):
        return api("GET", f"api/jobs/{job['id']}", token).json()["watched_files"] == count

    wait_for(lambda: seen(1), 30, what="the watch's first look (old.csv is not new)")
    (incoming / "new.csv").write_text("a\n1\n2\n")
    (incoming / "ignored.txt").write_text("x")
    run = first_run(api, token, job["id"], timeout=60)
    assert run["trigger"] == "watch" and run["parameters"] == {"trigger_file": "incoming/new.csv"}
    assert run["status"] == "succeeded", run
    assert "got incoming/new.csv 3" in json.dumps(output(api, token, run["id"]))
    assert seen(2)
    (incoming / "newer.csv").write_text("a\n")
    wait_for(lambda: seen(3), 30, what="the watch to see newer.csv")
    runs = api("GET", f"api/jobs/{job['id']}/runs", token).json()["runs"]
    assert sorted(r["parameters"]["trigger_file"] for r in runs) == ["incoming/new.csv", "incoming/newer.csv"]


def test_delete_job_removes_runs_and_outputs(api, users):
    _, token = users["owner"]
    job = create(api, token, name="doomed")
    run = first_run(api, token, job["id"])
    assert api("DELETE", f"api/jobs/{job['id']}", token).status_code == 204
    assert api("GET", f"api/jobs/{job['id']}", token).status_code == 404
    assert api("GET", f"api/runs/{run['id']}/output", token).status_code == 404


# --- bad input -------------------------------------------------------------------------

NO_KERNEL = notebook("1", kernel="")
BAD_INPUT = [
    ({"notebook": {"path": "a.ipynb"}}, "notebook"),
    ({"trigger": NEVER}, "notebook"),
    ({"notebook": {"path": "a.ipynb", "content": "not json"}}, "notebook.content"),
    ({"notebook": {"path": "a.ipynb", "content": {"cells": 3}}}, "notebook.content"),
    ({"notebook": {"path": "a.ipynb", "content": NO_KERNEL}}, "notebook.content.metadata.kernelspec"),
    ({"notebook": {"path": "a.ipynb", "content": notebook("1", kernel="julia-1.9")}}, "notebook.content.metadata.kernelspec.name"),
    ({"notebook": {"path": "../outside.ipynb", "content": TRIVIAL}}, "notebook.path"),
    ({"parameters": {"n": "three"}}, "parameters.n"),
    ({"parameters": {"m": 1}}, "parameters.m"),
    ({"parameters": [1]}, "parameters"),
    ({"profile": "no-such-profile"}, "profile"),
    ({"trigger": {"type": "cron", "cron": "61 * * * *"}}, "trigger.cron"),
    ({"trigger": {"type": "cron", "cron": "0 6 * * *", "timezone": "Mars/Olympus"}}, "trigger.timezone"),
    ({"trigger": {"type": "weekly"}}, "trigger.type"),
    ({"trigger": {"type": "watch", "path": "../../etc/*"}}, "trigger.path"),
    ({"timeout": 10**9}, "timeout"),
    ({"timeout": "soon"}, "timeout"),
    ({"retries": -1}, "retries"),
    ({"notify": {"url": "ftp://x"}}, "notify.url"),
    ({"notify": {"url": "https://x", "on": ["always"]}}, "notify.on"),
    ({"retention": {"keep_runs": 0}}, "retention.keep_runs"),
    ({"missed": "sometimes"}, "missed"),
    ({"retention": {"keep_days": 10**6}}, "retention.keep_days"),
    ({"timeout": float("nan")}, "timeout"),
    ({"notify": "https://hooks.example.com/s3cr3t"}, "notify"),
    ({"colour": "blue"}, "colour"),
]


@pytest.mark.parametrize("fields,field", BAD_INPUT)
def test_bad_input_is_a_400_naming_the_field(api, users, fields, field):
    _, token = users["owner"]
    body = {"notebook": {"path": "a.ipynb", "content": TRIVIAL}, "name": "bad", **fields}
    if "notebook" in fields or fields == {"trigger": NEVER}:
        body = {"name": "bad", **fields}
    # Sent as Python's json writes it, NaN included (requests refuses to).
    r = api("POST", "api/jobs", token, data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(f"{field}:"), r.json()
    assert "s3cr3t" not in r.text  # a webhook URL is never echoed


def test_other_bad_requests(api, users):
    _, token = users["owner"]
    r = api("POST", "api/jobs", token, data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
    job = create(api, token, trigger=NEVER, name="unique")
    again = api("POST", "api/jobs", token, json={"notebook": {"path": "x.ipynb", "content": TRIVIAL}, "name": "unique"})
    assert again.status_code == 409 and "unique" in again.json()["message"]
    r = api("POST", f"api/jobs/{job['id']}/runs", token, json={"parameters": {"n": 1.5}})
    assert r.status_code == 400 and r.json()["message"].startswith("parameters.n:")
    r = api("GET", "api/runs?status=done", token)
    assert r.status_code == 400 and r.json()["message"].startswith("status:")
    r = api("GET", "api/runs?limit=0", token)
    assert r.status_code == 400
    r = api("POST", "api/inspect", token, json={"notebook": {"path": "a.ipynb", "content": NO_KERNEL}})
    assert r.status_code == 400 and "no kernel" in r.json()["message"]
    r = api("POST", "api/inspect", token, json={"notebook": {"path": "a.ipynb", "content": notebook("1", parameters="a = 1.5  # rate\nb = 'x'\nc: int = 3")}})
    assert r.status_code == 200
    assert [(p["name"], p["type"], p["help"]) for p in r.json()["parameters"]] == [("a", "float", "rate"), ("b", "str", ""), ("c", "int", "")]


# --- who may do what -------------------------------------------------------------------


def test_security_matrix(api, users, hub, admin_token):
    """Owner: yes. Another user: 404 (as if absent). Admin: yes. Anonymous: 401.
    A token without the jobs scopes: 403."""
    owner, other, admin = users["owner"][1], users["other"][1], users["admin"][1]
    job = create(api, owner, name="guarded")
    run = first_run(api, owner, job["id"])
    j, r = job["id"], run["id"]
    endpoints = [
        ("GET", f"api/jobs/{j}", None), ("PATCH", f"api/jobs/{j}", {"timeout": 30}),
        ("POST", f"api/jobs/{j}/pause", None), ("POST", f"api/jobs/{j}/resume", None),
        ("GET", f"api/jobs/{j}/runs", None), ("GET", f"api/runs/{r}", None),
        ("GET", f"api/runs/{r}/output", None), ("GET", f"api/runs/{r}/output.html", None),
        ("GET", f"api/runs/{r}/log", None),
    ]
    for method, path, body in endpoints:
        kw = {"json": body} if body is not None else {}
        assert api(method, path, owner, **kw).status_code == 200, (method, path)
        assert api(method, path, admin, **kw).status_code == 200, (method, path)
        assert api(method, path, other, **kw).status_code == 404, (method, path)
        assert api(method, path, None, **kw).status_code == 401, (method, path)
    for method, path in [("POST", f"api/jobs/{j}/runs"), ("POST", f"api/runs/{r}/cancel"), ("DELETE", f"api/jobs/{j}")]:
        assert api(method, path, other, json={}).status_code == 404, (method, path)
        assert api(method, path, None, json={}).status_code == 401, (method, path)
    for path in ("api/jobs", "api/runs", "api/profiles"):
        assert api("GET", path, None).status_code == 401
    assert j not in [x["id"] for x in api("GET", "api/jobs", other).json()["jobs"]]
    assert r not in [x["id"] for x in api("GET", "api/runs", other).json()["runs"]]
    assert j not in [x["id"] for x in api("GET", "api/jobs", admin).json()["jobs"]]  # own by default
    assert j in [x["id"] for x in api("GET", "api/jobs?all=1", admin).json()["jobs"]]
    assert api("GET", "api/jobs?all=1", other).status_code == 403
    # A token that may only read its owner's name: no access to the service at all.
    scoped = hub.request("POST", "/users/jobber/tokens", admin_token, json={"scopes": ["read:users:name!user=jobber"]})
    assert scoped.status_code == 201, scoped.text
    denied = api("GET", "api/jobs", scoped.json()["token"])
    assert denied.status_code == 403 and "scope" in denied.json()["message"]
    # The page sends anonymous browsers to the hub's login.
    page = api("GET", "", None, allow_redirects=False)
    assert page.status_code == 302 and "/hub/api/oauth2/authorize" in page.headers["Location"]
    # Rendered outputs are sandboxed: the user's HTML never runs on the hub's origin.
    html = api("GET", f"api/runs/{r}/output.html", owner)
    assert "sandbox" in html.headers["Content-Security-Policy"]
    # Admins may delete anyone's job.
    assert api("DELETE", f"api/jobs/{j}", admin).status_code == 204


def test_openapi_describes_every_route(api):
    from hubforge.jobs.service import JobsService

    doc = api("GET", "api/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    described = set(doc["paths"])
    import re

    served = set()
    for pattern, *_ in JobsService().handlers():
        if not pattern:
            continue
        path = "/" + re.sub(r"api/jobs/\(\\d\{1,15\}\)", "api/jobs/{job_id}", pattern)
        path = re.sub(r"api/(runs|runner)/\(\\d\{1,15\}\)", r"api/\1/{run_id}", path)
        path = path.replace("/(pause|resume)", "/pause").replace("/(output|output\\.html|log)", "/output")
        served.add(path)
    assert served <= described
    assert {"/api/jobs/{job_id}/resume", "/api/runs/{run_id}/log", "/api/runs/{run_id}/output.html"} <= described


def test_profiles_lists_what_the_user_may_use(api, users):
    profiles = api("GET", "api/profiles", users["owner"][1]).json()["profiles"]
    assert profiles and sum(p["default"] for p in profiles) == 1
    assert {"slug", "display_name", "description", "default"} <= set(profiles[0])


def test_job_json_round_trips_through_patch(api, users):
    """Every field a GET returns may be sent back unchanged (what the edit form does)."""
    _, token = users["owner"]
    job = create(api, token, trigger=NEVER, name="roundtrip", retries=1, missed="skip",
                 retention={"keep_days": 3}, notify={"url": "https://hooks.example.com/x"})
    editable = {k: copy.deepcopy(job[k]) for k in ("name", "trigger", "parameters", "profile", "timeout",
                                                   "retries", "retry_backoff", "missed", "notify", "retention", "paused")}
    r = api("PATCH", f"api/jobs/{job['id']}", token, json=editable)
    assert r.status_code == 200, r.text
    after = r.json()
    assert {k: after[k] for k in editable} == {**editable, "notify": {"url": "https://hooks.example.com/x", "on": ["failure"]}}
