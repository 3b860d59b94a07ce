"""``hubforge jobs``: the command line of the jobs service.

Fast tests cover the parser (every command has ``--help``), ``-p`` parsing, the request
bodies, the hub URL and token defaults, the tables, and the failures: nothing listening,
and a service that answers errors (`ScriptedJobsService`, a small real HTTP server that
answers what a test scripts and records what it was sent). The ``slow`` tests run the
commands against the session hub's real ``jobs`` service.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hubforge.cli import build_parser, main
from hubforge.jobs import cli as jobs_cli
from hubforge.jobs.cli import (
    CommandError,
    OptionError,
    format_duration,
    format_trigger,
    hub_url_from_api_url,
    job_body,
    jobs_table,
    local_time,
    make_client,
    notebook_path_in_home,
    parse_notify_on,
    parse_parameter,
    parse_parameters,
    read_notebook,
    run_body,
    run_summary,
    runs_table,
    service_url,
)

from hubprocess import free_port, wait_for

TOKEN = "cli-test-token-d41d8cd98f00b204"
HOSTILE = "http://127.0.0.1:8000/@/space%20word/"


def notebook_json(parameters: str = "alpha = 0.1\nn = 3", body: str = "print(alpha * n)") -> dict:
    """A small nbformat 4 notebook: a ``parameters``-tagged cell, then one that uses it."""
    def cell(cell_id, source, tags=()):
        return {"cell_type": "code", "execution_count": None, "id": cell_id,
                "metadata": {"tags": list(tags)}, "outputs": [], "source": source}

    return {
        "cells": [cell("parameters", parameters, ["parameters"]), cell("body", body)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def write_notebook(path: Path, **kw) -> Path:
    path.write_text(json.dumps(notebook_json(**kw)))
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``hubforge *argv`` in this process: (exit status, stdout, stderr)."""
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse: --help, usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


JOBS_COMMANDS = _subcommands(_subcommands(build_parser())["jobs"])


# --- the parser --------------------------------------------------------------------------


def test_every_documented_command_is_there():
    assert sorted(JOBS_COMMANDS) == sorted([
        "list", "show", "create", "edit", "pause", "resume", "delete", "run", "runs", "cancel",
        "wait", "output", "log", "openapi",
    ])


@pytest.mark.parametrize("command", [[]] + [[name] for name in JOBS_COMMANDS], ids=lambda c: " ".join(c) or "jobs")
def test_every_command_has_help_with_a_description(capsys, command):
    rc, out, err = run_cli(capsys, "jobs", *command, "--help")
    assert rc == 0, err
    assert out.startswith(f"usage: hubforge jobs {' '.join(command)}".rstrip())
    parser = JOBS_COMMANDS[command[0]] if command else _subcommands(build_parser())["jobs"]
    assert parser.description and len(parser.description) > 20
    # argparse re-wraps the description: compare its words.
    assert " ".join(parser.description.split()[:6]) in " ".join(out.split())
    for option in ("--hub-url", "--token", "--json"):
        assert option in out


def test_connection_options_go_before_or_after_the_command():
    parser = build_parser()
    before = parser.parse_args(["jobs", "--hub-url", HOSTILE, "--json", "list"])
    after = parser.parse_args(["jobs", "list", "--hub-url", HOSTILE, "--json"])
    neither = parser.parse_args(["jobs", "list"])
    assert (before.hub_url, before.json) == (after.hub_url, after.json) == (HOSTILE, True)
    assert (neither.hub_url, neither.token, neither.json) == (None, None, False)


def test_jobs_without_a_command_is_a_usage_error(capsys):
    rc, out, err = run_cli(capsys, "jobs")
    assert rc == 2
    assert "COMMAND" in err


def test_two_triggers_are_a_usage_error(capsys, tmp_path):
    nb = write_notebook(tmp_path / "nb.ipynb")
    rc, out, err = run_cli(capsys, "jobs", "create", str(nb), "--cron", "* * * * *", "--once")
    assert rc == 2
    assert "not allowed with argument" in err


# --- -p values ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("alpha=0.5", ("alpha", 0.5)),
    ("n=3", ("n", 3)),
    ("flag=True", ("flag", True)),
    ("nothing=None", ("nothing", None)),
    ("items=[1, 'a']", ("items", [1, "a"])),
    ("pair=1,2", ("pair", [1, 2])),
    ("opts={'k': 1}", ("opts", {"k": 1})),
    ("name=report", ("name", "report")),            # not a literal: the text
    ("quoted='0.5'", ("quoted", "0.5")),              # a quoted literal stays a string
    ("path=data/in.csv", ("path", "data/in.csv")),
    ("empty=", ("empty", "")),
    ("eq=a=b", ("eq", "a=b")),                        # split at the first '='
    ("raw=b'x'", ("raw", "b'x'")),                    # bytes cannot be JSON: the text
    ("s={1, 2}", ("s", "{1, 2}")),                    # a set neither
    ("big=1e400", ("big", "1e400")),                  # inf is not JSON
    (" spaced =1", ("spaced", 1)),
])
def test_parameter_values_are_python_literals_else_text(text, expected):
    assert parse_parameter(text) == expected


@pytest.mark.parametrize("text", ["alpha", "=1", "1x=2", "a-b=1", "a b=1"])
def test_a_bad_parameter_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
        parse_parameter(text)


def test_a_bad_parameter_on_the_command_line_is_a_usage_error(capsys, tmp_path):
    nb = write_notebook(tmp_path / "nb.ipynb")
    rc, out, err = run_cli(capsys, "jobs", "create", str(nb), "-p", "1x=2")
    assert rc == 2
    assert "expected NAME=VALUE" in err


def test_repeated_parameters_keep_the_last_value():
    parsed = build_parser().parse_args(["jobs", "run", "nightly", "-p", "a=1", "-p", "b=x", "-p", "a=2"])
    assert parse_parameters(parsed.parameter) == {"a": 2, "b": "x"}
    assert run_body(parse_parameters(parsed.parameter)) == {"parameters": {"a": 2, "b": "x"}}
    assert run_body({}) == {}


def test_notify_on():
    assert parse_notify_on("failure,success") == ["failure", "success"]
    assert parse_notify_on(" success ,success") == ["success"]
    for bad in ("", "fail", "failure,started"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_notify_on(bad)


# --- request bodies -----------------------------------------------------------------------


def _options(*argv):
    """The option values of ``hubforge jobs *argv``, as the commands hand them to job_body."""
    return jobs_cli._options(build_parser().parse_args(["jobs", *argv]))


def test_create_body_with_every_option(tmp_path):
    notebook = {"path": "reports/nightly.ipynb", "content": notebook_json()}
    options = _options(
        "create", "x.ipynb", "--name", "nightly", "--cron", "0 6 * * *", "--timezone", "Europe/Paris",
        "-p", "alpha=0.5", "-p", "n=4", "--profile", "cpu-small", "--timeout", "600", "--retries", "2",
        "--retry-backoff", "30", "--missed", "skip", "--notify-url", "https://hooks.example.com/x",
        "--notify-on", "failure,success", "--keep-runs", "50", "--keep-days", "30", "--paused",
    )
    assert job_body(options, notebook=notebook) == {
        "notebook": notebook,
        "name": "nightly",
        "trigger": {"type": "cron", "cron": "0 6 * * *", "timezone": "Europe/Paris"},
        "parameters": {"alpha": 0.5, "n": 4},
        "profile": "cpu-small",
        "timeout": 600, "retries": 2, "retry_backoff": 30,
        "missed": "skip",
        "notify": {"url": "https://hooks.example.com/x", "on": ["failure", "success"]},
        "retention": {"keep_runs": 50, "keep_days": 30},
        "paused": True,
    }


def test_create_body_leaves_out_what_is_not_given():
    notebook = {"path": "nb.ipynb", "content": notebook_json()}
    assert job_body(_options("create", "nb.ipynb"), notebook=notebook) == {"notebook": notebook}
    assert job_body(_options("create", "nb.ipynb", "--once"))["trigger"] == {"type": "once"}
    assert job_body(_options("create", "nb.ipynb", "--cron", "*/5 * * * *"))["trigger"] == {
        "type": "cron", "cron": "*/5 * * * *"}
    assert job_body(_options("create", "nb.ipynb", "--watch", "incoming/*.csv", "--watch-parameter", "f")) == {
        "trigger": {"type": "watch", "path": "incoming/*.csv", "parameter": "f"}}
    assert job_body(_options("create", "nb.ipynb", "--notify-url", "https://h/x"))["notify"] == {
        "url": "https://h/x", "on": ["failure"]}


@pytest.mark.parametrize("argv, message", [
    (["--timezone", "UTC"], "--timezone goes with --cron"),
    (["--watch-parameter", "f"], "--watch-parameter goes with --watch"),
    (["--cron", "* * * * *", "--watch-parameter", "f"], "--watch-parameter goes with --watch"),
    (["--watch", "*.csv", "--timezone", "UTC"], "--timezone goes with --cron"),
    (["--once", "--timezone", "UTC"], "--once takes no"),
    (["--notify-on", "success"], "--notify-on goes with --notify-url"),
])
def test_create_options_that_do_not_go_together(argv, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        job_body(_options("create", "nb.ipynb", *argv))


CURRENT = {
    "id": 3, "name": "nightly",
    "trigger": {"type": "cron", "cron": "0 6 * * *", "timezone": "UTC"},
    "parameters": {"alpha": 0.5, "n": 3},
    "notify": {"url": "https://hooks.example.com/x", "on": ["failure"]},
    "retention": {"keep_runs": 50, "keep_days": 30},
}


@pytest.mark.parametrize("argv, expected", [
    (["--timezone", "Europe/Paris"], {"trigger": {"type": "cron", "cron": "0 6 * * *", "timezone": "Europe/Paris"}}),
    (["--cron", "0 7 * * *"], {"trigger": {"type": "cron", "cron": "0 7 * * *", "timezone": "UTC"}}),
    (["--once"], {"trigger": {"type": "once"}}),
    (["-p", "n=5"], {"parameters": {"alpha": 0.5, "n": 5}}),
    (["--notify-on", "failure,success"],
     {"notify": {"url": "https://hooks.example.com/x", "on": ["failure", "success"]}}),
    (["--notify-url", "https://h/y"], {"notify": {"url": "https://h/y", "on": ["failure"]}}),
    (["--keep-days", "7"], {"retention": {"keep_runs": 50, "keep_days": 7}}),
    (["--name", "daily", "--retries", "0"], {"name": "daily", "retries": 0}),
    ([], {}),
])
def test_edit_body_changes_only_what_is_given_and_completes_parts(argv, expected):
    assert job_body(_options("edit", "nightly", *argv), current=CURRENT) == expected


def test_edit_a_watch_parameter_of_a_cron_job_is_refused():
    with pytest.raises(OptionError, match="this job watches no files"):
        job_body(_options("edit", "nightly", "--watch-parameter", "f"), current=CURRENT)
    job = {**CURRENT, "trigger": {"type": "once"}}
    with pytest.raises(OptionError, match="this job has no cron schedule"):
        job_body(_options("edit", "nightly", "--timezone", "UTC"), current=job)


def test_read_notebook(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "reports").mkdir(parents=True)
    inside = write_notebook(home / "reports" / "nightly.ipynb")
    outside = write_notebook(tmp_path / "elsewhere.ipynb")
    monkeypatch.setenv("HOME", str(home))
    assert read_notebook(inside) == {"path": "reports/nightly.ipynb", "content": notebook_json()}
    assert read_notebook(outside)["path"] == "elsewhere.ipynb"
    assert read_notebook(outside, "jobs/copy.ipynb")["path"] == "jobs/copy.ipynb"
    assert notebook_path_in_home(Path("x.ipynb"), "a/b.ipynb", home) == "a/b.ipynb"
    for bad in ("/etc/x.ipynb", "../x.ipynb"):
        with pytest.raises(OptionError, match="relative to your home"):
            read_notebook(outside, bad)


def test_a_file_that_is_not_a_notebook_is_refused(tmp_path):
    with pytest.raises(OptionError, match="cannot read the notebook"):
        read_notebook(tmp_path / "missing.ipynb")
    (tmp_path / "text.ipynb").write_text("not json")
    with pytest.raises(OptionError, match="not JSON"):
        read_notebook(tmp_path / "text.ipynb")
    (tmp_path / "list.ipynb").write_text("[]")
    with pytest.raises(OptionError, match="no nbformat cells"):
        read_notebook(tmp_path / "list.ipynb")


# --- where the service is -----------------------------------------------------------------


def test_hub_url_and_service_url():
    assert hub_url_from_api_url("http://127.0.0.1:8081/@/space%20word/hub/api") == HOSTILE.replace("8000", "8081")
    assert hub_url_from_api_url("https://hub.example.com/hub/api/") == "https://hub.example.com/"
    assert service_url(HOSTILE) == HOSTILE + "services/jobs/"
    assert service_url("http://h:8000") == "http://h:8000/services/jobs/"


@pytest.mark.parametrize("hub_url, environ, url", [
    (HOSTILE, {"JUPYTERHUB_API_URL": "http://hub:8081/hub/api"}, HOSTILE + "services/jobs/"),
    (None, {"JUPYTERHUB_API_URL": "https://hub.example.com/x/hub/api"}, "https://hub.example.com/x/services/jobs/"),
    (None, {}, "http://127.0.0.1:8000/services/jobs/"),
])
def test_the_service_url_comes_from_the_option_else_the_environment(hub_url, environ, url):
    client = make_client(hub_url, TOKEN, environ)
    assert client.url == url
    assert TOKEN not in repr(client)


def test_inside_a_user_server_the_service_is_looked_up_through_the_hub():
    environ = {"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api", "JUPYTERHUB_SERVICE_PREFIX": "/user/a/",
               "JUPYTERHUB_API_TOKEN": TOKEN}
    client = make_client(None, None, environ)
    assert client._fixed_url is None and client._api_url == environ["JUPYTERHUB_API_URL"]


def test_the_token_comes_from_the_option_else_the_environment():
    assert make_client(None, "given", {"JUPYTERHUB_API_TOKEN": "env"})._token == "given"
    assert make_client(None, None, {"JUPYTERHUB_API_TOKEN": "env", "HUBFORGE_TOKEN": "hf"})._token == "env"
    assert make_client(None, None, {"HUBFORGE_TOKEN": "hf"})._token == "hf"
    with pytest.raises(CommandError, match="no API token"):
        make_client(None, None, {})


# --- failures -----------------------------------------------------------------------------


@pytest.fixture
def no_hub_env(monkeypatch):
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "HUBFORGE_TOKEN", "JUPYTERHUB_SERVICE_PREFIX"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("command", [["list"], ["show", "nightly"], ["runs"], ["wait", "3"], ["output", "3"],
                                     ["log", "3"], ["cancel", "3"], ["openapi"]])
def test_nothing_listening_is_one_clear_line_and_exit_1(capsys, no_hub_env, command):
    url = f"http://127.0.0.1:{free_port()}/"
    rc, out, err = run_cli(capsys, "jobs", "--hub-url", url, "--token", TOKEN, *command)
    assert rc == 1
    assert out == ""
    assert err.startswith(f"hubforge jobs: error: cannot reach the jobs service at {url}services/jobs/api/")
    assert err.rstrip().endswith("(HTTP 502)")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert TOKEN not in out + err


def test_the_installed_command_fails_cleanly_too(no_hub_env, tmp_path):
    nb = write_notebook(tmp_path / "nb.ipynb")
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": TOKEN}
    hubforge = Path(sys.executable).parent / "hubforge"
    proc = subprocess.run([str(hubforge), "jobs", "--hub-url", f"http://127.0.0.1:{free_port()}/",
                           "create", str(nb), "-p", "alpha=0.5"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("hubforge jobs: error: cannot reach the jobs service")
    assert "Traceback" not in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr


def test_no_token_is_a_clear_error(capsys, no_hub_env):
    rc, out, err = run_cli(capsys, "jobs", "list")
    assert rc == 1
    assert err == ("hubforge jobs: error: no API token: give --token, or set $JUPYTERHUB_API_TOKEN or "
                   "$HUBFORGE_TOKEN (`hubforge token NAME` makes one)\n")


def test_a_notebook_that_is_not_there_is_a_clear_error(capsys, no_hub_env, tmp_path):
    rc, out, err = run_cli(capsys, "jobs", "--token", TOKEN, "create", str(tmp_path / "nope.ipynb"))
    assert rc == 1
    assert err.startswith("hubforge jobs: error: cannot read the notebook")
    assert "Traceback" not in err


# --- against a scripted service -----------------------------------------------------------


class ScriptedJobsService:
    """A real HTTP server standing in for the jobs service: it answers each
    ``(method, path)`` with the next of the answers a test scripted for it (the last one
    repeats) and records the requests, with their bodies and Authorization headers."""

    def __init__(self):
        self.answers: dict[tuple[str, str], list[tuple[int, object]]] = {}
        self.requests: list[dict] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("/services/jobs/", 1)[-1]
                service.requests.append({"method": self.command, "path": path,
                                         "body": json.loads(body) if body else None,
                                         "authorization": self.headers.get("Authorization")})
                key = (self.command, path.split("?")[0])
                queue = service.answers.get(key) or [(404, {"status": 404, "message": f"no route {key}"})]
                status, payload = queue.pop(0) if len(queue) > 1 else queue[0]
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.hub_url = f"http://127.0.0.1:{self.server.server_port}/@/space%20word/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def script(self, method: str, path: str, *answers: tuple[int, object]) -> None:
        self.answers[(method, path)] = list(answers)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def service(no_hub_env, monkeypatch):
    monkeypatch.setattr(jobs_cli, "POLL_INTERVAL", 0.01)
    with ScriptedJobsService() as s:
        yield s


def jobs(capsys, service, *argv):
    return run_cli(capsys, "jobs", "--hub-url", service.hub_url, "--token", TOKEN, *argv)


JOB = {"id": 3, "name": "nightly", "owner": "alice",
       "trigger": {"type": "cron", "cron": "0 6 * * *", "timezone": "UTC"},
       "profile": "cpu-small", "paused": False, "next_run": "2026-11-27T06:00:00Z",
       "last_run": {"id": 17, "status": "succeeded"}, "parameters": {"alpha": 0.5}}


def run_state(status, cell=None, cells=None, **kw):
    progress = {"cell": cell, "cells": cells} if cells else None
    return {"id": 17, "job_id": 3, "job_name": "nightly", "status": status, "progress": progress,
            "reason": "", "duration": None, **kw}


def test_create_sends_the_body_and_the_token(capsys, service, tmp_path):
    nb = write_notebook(tmp_path / "nightly.ipynb")
    service.script("POST", "api/jobs", (201, {**JOB, "last_run": None}))
    rc, out, err = jobs(capsys, service, "create", str(nb), "--cron", "0 6 * * *", "-p", "alpha=0.5")
    assert rc == 0, err
    (request,) = service.requests
    assert request["authorization"] == f"token {TOKEN}"
    assert request["body"] == {"notebook": {"path": "nightly.ipynb", "content": notebook_json()},
                               "trigger": {"type": "cron", "cron": "0 6 * * *"}, "parameters": {"alpha": 0.5}}
    assert out.startswith("created job 3 (nightly): cron 0 6 * * * (UTC), next run ")
    assert TOKEN not in out + err


def test_the_services_400_message_is_shown_as_it_is(capsys, service, tmp_path):
    nb = write_notebook(tmp_path / "nightly.ipynb")
    message = "parameters.n: expected an int (the default is 3), got 'oops'"
    service.script("POST", "api/jobs", (400, {"status": 400, "message": message}))
    rc, out, err = jobs(capsys, service, "create", str(nb), "-p", "n=oops")
    assert rc == 1
    assert err == f"hubforge jobs: error: {message} (HTTP 400)\n"


def test_a_job_is_named_by_name_or_id(capsys, service):
    service.script("GET", "api/jobs", (200, {"jobs": [JOB, {**JOB, "id": 4, "name": "17"}]}))
    service.script("POST", "api/jobs/3/pause", (200, {**JOB, "paused": True}))
    service.script("POST", "api/jobs/4/pause", (200, {**JOB, "id": 4, "paused": True}))
    service.script("POST", "api/jobs/9/pause", (404, {"status": 404, "message": "no job 9"}))
    assert jobs(capsys, service, "pause", "nightly")[0] == 0
    assert jobs(capsys, service, "pause", "17")[0] == 0   # a job named "17" wins over id 17
    rc, out, err = jobs(capsys, service, "pause", "9")
    assert (rc, err) == (1, "hubforge jobs: error: no job 9 (HTTP 404)\n")
    rc, out, err = jobs(capsys, service, "pause", "weekly")
    assert rc == 1
    assert err == ("hubforge jobs: error: you have no job named 'weekly' "
                   "(hubforge jobs list shows your jobs) (HTTP 404)\n")
    posted = [r["path"] for r in service.requests if r["method"] == "POST"]
    assert posted == ["api/jobs/3/pause", "api/jobs/4/pause", "api/jobs/9/pause"]


def test_list_shows_an_aligned_table(capsys, service):
    service.script("GET", "api/jobs", (200, {"jobs": [JOB, {**JOB, "id": 12, "name": "a-much-longer-name",
                                                              "paused": True, "last_run": None,
                                                              "trigger": {"type": "once"}, "next_run": None}]}))
    rc, out, err = jobs(capsys, service, "list")
    assert rc == 0, err
    header, first, second = out.splitlines()
    assert header.split() == ["ID", "NAME", "TRIGGER", "PROFILE", "STATE", "NEXT", "RUN", "LAST", "RUN"]
    for column in ("NAME", "TRIGGER", "PROFILE", "STATE"):
        start = header.index(column)
        assert first[start - 2:start] == "  " and second[start - 2:start] == "  "
    assert "active" in first and "17 succeeded" in first and local_time("2026-11-27T06:00:00Z") in first
    assert "paused" in second and "a-much-longer-name" in second
    rc, out, err = jobs(capsys, service, "list", "--json")
    assert json.loads(out)["jobs"][0]["id"] == 3


def test_wait_follows_the_run_and_exits_0_on_success(capsys, service):
    service.script("GET", "api/runs/17", (200, run_state("queued")), (200, run_state("running", 1, 3)),
                   (200, run_state("running", 2, 3)), (200, run_state("succeeded", 3, 3, duration=12.4)))
    rc, out, err = jobs(capsys, service, "wait", "17")
    assert rc == 0, err
    assert out == "run 17 (nightly) succeeded in 12 s\n"
    assert len([r for r in service.requests if r["path"] == "api/runs/17"]) == 4


@pytest.mark.parametrize("status", ["failed", "timed_out", "cancelled"])
def test_wait_exits_1_when_the_run_did_not_succeed(capsys, service, status):
    service.script("GET", "api/runs/17", (200, run_state("running", 1, 3)),
                   (200, run_state(status, 2, 3, duration=3.14, reason="ZeroDivisionError: division by zero")))
    rc, out, err = jobs(capsys, service, "wait", "17")
    assert rc == 1
    assert out == f"run 17 (nightly) {status} after 3.1 s: ZeroDivisionError: division by zero\n"
    rc, out, err = jobs(capsys, service, "wait", "17", "--json")
    assert rc == 1 and json.loads(out)["status"] == status


def test_wait_gives_up_after_its_timeout_and_says_the_run_goes_on(capsys, service):
    service.script("GET", "api/runs/17", (200, run_state("running", 1, 3)))
    rc, out, err = jobs(capsys, service, "wait", "17", "--timeout", "0.05")
    assert rc == 1
    assert err == ("hubforge jobs: error: run 17 is still running after 0.05 s; it goes on "
                   "(hubforge jobs wait 17, or hubforge jobs cancel 17)\n")


def test_wait_rides_over_a_service_restart(capsys, service):
    service.script("GET", "api/runs/17", (200, run_state("running", 1, 3)),
                   (502, {"status": 502, "message": "restarting"}),
                   (200, run_state("succeeded", 3, 3, duration=1.0)))
    rc, out, err = jobs(capsys, service, "wait", "17")
    assert rc == 0, err


def test_wait_gives_up_when_the_service_stays_away(capsys, service):
    service.script("GET", "api/runs/17", (200, run_state("running", 1, 3)),
                   (502, {"status": 502, "message": "the jobs service is down"}))
    rc, out, err = jobs(capsys, service, "wait", "17")
    assert (rc, err) == (1, "hubforge jobs: error: the jobs service is down (HTTP 502)\n")
    polls = [r for r in service.requests if r["path"] == "api/runs/17"]
    assert len(polls) == 1 + jobs_cli.POLL_FAILURES


def test_run_now_with_parameters_and_wait(capsys, service):
    service.script("GET", "api/jobs", (200, [JOB]))  # a bare list is understood too
    service.script("POST", "api/jobs/3/runs", (201, run_state("queued")))
    service.script("GET", "api/runs/17", (200, run_state("failed", 1, 3, duration=2.0, reason="boom")))
    rc, out, err = jobs(capsys, service, "run", "nightly", "-p", "alpha=0.9", "--wait")
    assert rc == 1
    assert out == "run 17 (nightly) failed after 2.0 s: boom\n"
    (post,) = [r for r in service.requests if r["method"] == "POST"]
    assert post["body"] == {"parameters": {"alpha": 0.9}}


def test_output_to_a_file_and_to_stdout_and_the_log(capsys, service, tmp_path):
    content = json.dumps(notebook_json()).encode()
    service.script("GET", "api/runs/17/output", (200, content))
    service.script("GET", "api/runs/17/log", (200, b"attempt 1\nkernel python3 started\n"))
    rc, out, err = jobs(capsys, service, "output", "17", "-o", str(tmp_path / "out.ipynb"))
    assert rc == 0, err
    assert (tmp_path / "out.ipynb").read_bytes() == content
    assert out == ""
    rc, out, err = jobs(capsys, service, "output", "17")
    assert rc == 0 and out.encode() == content
    rc, out, err = jobs(capsys, service, "log", "17")
    assert (rc, out) == (0, "attempt 1\nkernel python3 started\n")
    rc, out, err = jobs(capsys, service, "output", "17", "-o", str(tmp_path / "no" / "such" / "dir.ipynb"))
    assert rc == 1 and err.startswith("hubforge jobs: error: cannot write")


def test_edit_sends_only_the_change(capsys, service, tmp_path):
    service.script("GET", "api/jobs", (200, {"jobs": [JOB]}))
    service.script("GET", "api/jobs/3", (200, JOB))
    service.script("PATCH", "api/jobs/3", (200, {**JOB, "parameters": {"alpha": 0.7}}))
    rc, out, err = jobs(capsys, service, "edit", "nightly", "-p", "alpha=0.7")
    assert rc == 0, err
    (patch,) = [r for r in service.requests if r["method"] == "PATCH"]
    assert patch["body"] == {"parameters": {"alpha": 0.7}}
    rc, out, err = jobs(capsys, service, "edit", "nightly")
    assert rc == 1 and err.startswith("hubforge jobs: error: nothing to change")
    rc, out, err = jobs(capsys, service, "edit", "nightly", "--path-in-home", "a.ipynb")
    assert (rc, err) == (1, "hubforge jobs: error: --path-in-home goes with --notebook\n")


def test_delete_asks_unless_yes(capsys, service, monkeypatch):
    service.script("GET", "api/jobs", (200, {"jobs": [JOB]}))
    service.script("GET", "api/jobs/3", (200, JOB))
    service.script("DELETE", "api/jobs/3", (204, b""))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    rc, out, err = jobs(capsys, service, "delete", "nightly")
    assert rc == 1 and "without --yes" in err
    assert not [r for r in service.requests if r["method"] == "DELETE"]
    rc, out, err = jobs(capsys, service, "delete", "nightly", "--yes")
    assert (rc, out) == (0, "deleted job 3 (nightly)\n")
    assert [r["path"] for r in service.requests if r["method"] == "DELETE"] == ["api/jobs/3"]


# --- formatting ---------------------------------------------------------------------------


@pytest.mark.parametrize("seconds, text", [
    (None, ""), (0.42, "0.4 s"), (12.4, "12 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"), (7440, "2 h 04 min"),
])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_times_are_shown_in_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving
    time.tzset()
    try:
        assert local_time("2026-11-27T06:00:00Z") == "2026-11-27 11:30:00"
        assert local_time("2026-11-27T06:00:00+00:00") == "2026-11-27 11:30:00"
        assert local_time(None) == "" and local_time("soon") == "soon"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_triggers_runs_and_summaries_read_well():
    assert format_trigger({"type": "cron", "cron": "0 6 * * *"}) == "cron 0 6 * * * (UTC)"
    assert format_trigger({"type": "watch", "path": "in/*.csv", "parameter": "f"}) == "watch in/*.csv -> f"
    assert format_trigger({"type": "once"}) == "once"
    table = runs_table([run_state("running", 2, 5, attempt=1, trigger="cron", started_at="2026-11-27T06:00:00Z"),
                        run_state("failed", attempt=2, trigger="retry", duration=65, reason="line one\nline two")])
    header, running, failed = table.splitlines()
    assert header.split()[:3] == ["RUN", "JOB", "STATUS"]
    assert "2/5" in running and "so far" in running
    assert "1 min 05 s" in failed and "line one line two" in failed
    cancelled = run_state("cancelled", reason="cancelled by alice")
    assert run_summary(cancelled) == "run 17 (nightly) cancelled: cancelled by alice"
    assert "OWNER" in jobs_table([JOB], owners=True).splitlines()[0]


# --- against the session hub's jobs service -----------------------------------------------


@pytest.fixture(scope="module")
def jobs_user(hub, admin_token):
    """A hub user and their API token (no server: the service runs jobs without one)."""
    return "cli-jobber", hub.make_user(admin_token, "cli-jobber")


def hub_jobs(capsys, hub, token, *argv):
    return run_cli(capsys, "jobs", "--hub-url", hub.url, "--token", token, *argv)


@pytest.mark.slow
def test_create_a_once_job_wait_for_its_run_and_fetch_the_output(capsys, hub, jobs_user, no_hub_env, tmp_path):
    _, token = jobs_user
    nb = write_notebook(tmp_path / "cli-once.ipynb", body="result = alpha * n\nprint(f'result={result}')")
    rc, out, err = hub_jobs(capsys, hub, token, "create", str(nb), "--once", "-p", "alpha=0.5", "--json")
    assert rc == 0, err
    job = json.loads(out)
    assert job["name"] == "cli-once" and job["parameters"] == {"alpha": 0.5}
    assert job["trigger"]["type"] == "once"
    try:
        def the_run():
            rc, out, err = hub_jobs(capsys, hub, token, "runs", str(job["id"]), "--json")
            assert rc == 0, err
            answer = json.loads(out)
            return answer["runs"] if isinstance(answer, dict) else answer

        (run,) = wait_for(the_run, 60, what=f"the run of job {job['id']}")
        assert run["trigger"] == "once"

        rc, out, err = hub_jobs(capsys, hub, token, "wait", str(run["id"]), "--timeout", "240")
        assert rc == 0, f"{out}\n{err}\n" + hub_jobs(capsys, hub, token, "log", str(run["id"]))[1]
        assert out.startswith(f"run {run['id']} (cli-once) succeeded")

        target = tmp_path / "out.ipynb"
        rc, out, err = hub_jobs(capsys, hub, token, "output", str(run["id"]), "-o", str(target))
        assert rc == 0, err
        executed = json.loads(target.read_text())
        sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in executed["cells"]]
        assert any("alpha = 0.5" in s for s in sources)  # papermill's injected parameters
        outputs = json.dumps([c.get("outputs", []) for c in executed["cells"]])
        assert "result=1.5" in outputs

        rc, out, err = hub_jobs(capsys, hub, token, "runs", str(job["id"]))
        assert rc == 0 and "succeeded" in out
    finally:
        hub_jobs(capsys, hub, token, "delete", str(job["id"]), "--yes")


@pytest.mark.slow
def test_a_cron_job_is_paused_listed_and_deleted(capsys, hub, jobs_user, no_hub_env, tmp_path):
    _, token = jobs_user
    nb = write_notebook(tmp_path / "cli-cron.ipynb")
    rc, out, err = hub_jobs(capsys, hub, token, "create", str(nb), "--name", "cli-cron",
                            "--cron", "0 6 * * *", "--timezone", "Europe/Paris")
    assert rc == 0, err
    assert out.startswith("created job ") and "cron 0 6 * * * (Europe/Paris)" in out
    try:
        rc, out, err = hub_jobs(capsys, hub, token, "pause", "cli-cron")
        assert rc == 0, err
        rc, out, err = hub_jobs(capsys, hub, token, "list")
        assert rc == 0, err
        (line,) = [line for line in out.splitlines() if " cli-cron " in f" {line} "]
        assert "paused" in line.split() and "cron 0 6 * * * (Europe/Paris)" in line
        rc, out, err = hub_jobs(capsys, hub, token, "show", "cli-cron", "--json")
        assert rc == 0 and json.loads(out)["paused"] is True
    finally:
        rc, out, err = hub_jobs(capsys, hub, token, "delete", "cli-cron", "--yes")
    assert rc == 0, err
    rc, out, err = hub_jobs(capsys, hub, token, "list")
    assert rc == 0 and "cli-cron" not in out
    rc, out, err = hub_jobs(capsys, hub, token, "show", "cli-cron")
    assert rc == 1 and "(HTTP 404)" in err


@pytest.mark.slow
def test_a_parameter_of_the_wrong_type_is_the_services_400_naming_it(capsys, hub, jobs_user, no_hub_env, tmp_path):
    _, token = jobs_user
    nb = write_notebook(tmp_path / "cli-typed.ipynb")
    rc, out, err = hub_jobs(capsys, hub, token, "create", str(nb), "--paused", "-p", "n=oops")
    assert rc == 1
    assert out == ""
    assert err.startswith("hubforge jobs: error: ") and err.rstrip().endswith("(HTTP 400)")
    assert re.search(r"\bn\b", err.removeprefix("hubforge jobs: error: ")), err
    assert "Traceback" not in err and token not in err
    rc, out, err = hub_jobs(capsys, hub, token, "list")
    assert "cli-typed" not in out


@pytest.mark.slow
def test_inside_a_user_server_the_environment_is_enough(capsys, hub, jobs_user, no_hub_env, monkeypatch):
    """What a terminal in a user server has: the hub's internal API URL and a token."""
    _, token = jobs_user
    internal_api = hub.settings["hub_bind_url"].rstrip("/") + hub.prefix + "hub/api"
    monkeypatch.setenv("JUPYTERHUB_API_URL", internal_api)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", f"{hub.prefix}user/cli-jobber/")
    rc, out, err = run_cli(capsys, "jobs", "list", "--json")
    assert rc == 0, err
    assert isinstance(json.loads(out)["jobs"], list)
    # The hub's own address does not route /services/: that is why the service is looked up.
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX")
    rc, out, err = run_cli(capsys, "jobs", "list")
    assert rc == 1 and err.startswith("hubforge jobs: error: ")  # the hub redirects elsewhere
    assert token not in out + err
