"""Tests of the notebook side of scheduled jobs: `hubforge.jobs.client`, ``%schedule``
and the jobs widget.

The fast tests need no service: the request bodies (compared as dicts), the argument
errors raised before any request, ``-p`` parsing and the magic's help and usage errors
in a real IPython shell, and the widget's form built from a parameters list. The slow
ones run against the session hub's real ``jobs`` service (docs/jobs.md), as a hub user
with their own token, from a real IPython shell: real papermill runs of small notebooks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from hubforge.client import ServiceError
from hubforge.jobs import client as jobs
from hubforge.jobs.client import JobsError, job_request, update_request
from hubforge.jobs.magics import USAGE, JobsMagics, make_command_parser, make_schedule_parser, parse_parameter
from hubforge.jobs.widgets import JobsWidget, form_fields, format_duration, output_link, parse_field
from hubprocess import wait_for

#: Seconds a run may take here: a kernel start on a two-core machine, then a few cells.
RUN_TIMEOUT = 240


def write_notebook(path: Path, *cells: tuple[str, list[str]]) -> Path:
    """A notebook of code cells ``(source, tags)``, with the python3 kernel."""
    nb = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}},
        "cells": [{"cell_type": "code", "id": f"cell-{i}", "metadata": {"tags": tags},
                   "execution_count": None, "outputs": [], "source": source}
                  for i, (source, tags) in enumerate(cells)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """$HOME (the server's root) and the working directory: a fresh folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    return home


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """A hub API URL where nothing listens: a request would fail with 502, not ValueError."""
    from hubforge.services import free_port

    monkeypatch.setenv("JUPYTERHUB_API_URL", f"http://127.0.0.1:{free_port()}/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "not-a-real-token")


@pytest.fixture
def report(home):
    return write_notebook(home / "reports" / "daily.ipynb",
                          ("n = 2", ["parameters"]), ("print(n * 21)", []))


# --- request bodies ----------------------------------------------------------------------

NB = {"path": "reports/daily.ipynb", "content": {"cells": [], "nbformat": 4}}


def test_the_default_job_runs_once():
    assert job_request(NB) == {"notebook": NB, "trigger": {"type": "once"}}
    assert job_request(NB, once=True, parameters={"n": 3}) == {
        "notebook": NB, "trigger": {"type": "once"}, "parameters": {"n": 3}}


def test_a_cron_job_with_every_option():
    body = job_request(
        NB, name="nightly", cron="0 6 * * 1-5", timezone="Europe/Paris",
        parameters={"alpha": 0.5, "label": "x", "xs": [1, 2]}, profile="cpu-small",
        timeout=600, retries=2, retry_backoff=30, missed="skip",
        notify_url="https://hooks.example.com/x", notify_on=["failure", "success"],
        keep_runs=50, keep_days=30, paused=True)
    assert body == {
        "notebook": NB, "name": "nightly",
        "trigger": {"type": "cron", "cron": "0 6 * * 1-5", "timezone": "Europe/Paris"},
        "parameters": {"alpha": 0.5, "label": "x", "xs": [1, 2]},
        "profile": "cpu-small", "timeout": 600, "retries": 2, "retry_backoff": 30, "missed": "skip",
        "notify": {"url": "https://hooks.example.com/x", "on": ["failure", "success"]},
        "retention": {"keep_runs": 50, "keep_days": 30},
        "paused": True,
    }
    # No timezone given: the service's default (UTC) applies.
    assert job_request(NB, cron="*/5 * * * *")["trigger"] == {"type": "cron", "cron": "*/5 * * * *"}


def test_a_watch_job_and_a_webhook_on_failure_by_default():
    body = job_request(NB, watch="incoming/*.csv", notify_url="https://hooks.example.com/x",
                       keep_days=7)
    assert body["trigger"] == {"type": "watch", "path": "incoming/*.csv", "parameter": "trigger_file"}
    assert body["notify"] == {"url": "https://hooks.example.com/x", "on": ["failure"]}
    assert body["retention"] == {"keep_days": 7}
    assert job_request(NB, watch="in/*.json", watch_parameter="path")["trigger"]["parameter"] == "path"
    assert job_request(NB, notify_url="https://h.example/x", notify_on="success")["notify"]["on"] == ["success"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cron": "0 6 * * *", "once": True}, "not several: cron and once"),
    ({"cron": "0 6 * * *", "watch": "in/*.csv"}, "not several: cron and watch"),
    ({"once": True, "watch": "in/*.csv"}, "not several: once and watch"),
    ({"timezone": "UTC"}, "^timezone: only a cron schedule"),
    ({"once": True, "watch_parameter": "f"}, "^watch_parameter: only a watch trigger"),
    ({"notify_on": ["success"]}, "^notify_on: give notify_url"),
    ({"parameters": [("n", 1)]}, "^parameters: expected a dict"),
    ({"parameters": {"not a name": 1}}, "^parameters: 'not a name' is not a parameter name"),
    ({"parameters": {"when": object()}}, "^parameters: when=<object"),
])
def test_argument_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        job_request(NB, **kwargs)


def test_an_update_completes_the_parts_given():
    current = {"id": 3, "trigger": {"type": "cron", "cron": "0 6 * * *", "timezone": "UTC"},
               "notify": {"url": "https://h.example/x", "on": ["failure"]},
               "retention": {"keep_runs": 50}}
    assert update_request(current, timezone="Europe/Paris") == {
        "trigger": {"type": "cron", "cron": "0 6 * * *", "timezone": "Europe/Paris"}}
    assert update_request(current, notify_on="success", keep_days=3, retries=0, paused=False) == {
        "notify": {"url": "https://h.example/x", "on": ["success"]},
        "retention": {"keep_runs": 50, "keep_days": 3}, "retries": 0, "paused": False}
    assert update_request(current, watch="in/*.csv") == {
        "trigger": {"type": "watch", "path": "in/*.csv", "parameter": "trigger_file"}}
    assert update_request(current, notebook=NB, parameters={"n": 1}) == {"notebook": NB, "parameters": {"n": 1}}
    with pytest.raises(ValueError, match="^update: nothing to change"):
        update_request(current)
    with pytest.raises(ValueError, match="^watch_parameter: this job does not watch"):
        update_request(current, watch_parameter="f")
    with pytest.raises(ValueError, match="^timezone: this job has no cron schedule"):
        update_request({"trigger": {"type": "once"}}, timezone="UTC")
    with pytest.raises(ValueError, match="^notify_on: this job has no webhook"):
        update_request({"trigger": {"type": "once"}}, notify_on="failure")


# --- finding and reading the notebook ----------------------------------------------------


def test_schedule_reads_the_notebook_relative_to_home(report, home, monkeypatch):
    ref = jobs.read_notebook("reports/daily.ipynb")
    assert ref["path"] == "reports/daily.ipynb"
    assert [c["source"] for c in ref["content"]["cells"]] == ["n = 2", "print(n * 21)"]
    # Relative to the working directory, which in a kernel is the notebook's folder.
    (home / "reports" / "sub").mkdir()
    monkeypatch.chdir(home / "reports" / "sub")
    assert jobs.read_notebook("../daily.ipynb")["path"] == "reports/daily.ipynb"
    # A notebook outside the server's root is named by its file name.
    outside = write_notebook(home.parent / "elsewhere" / "x.ipynb", ("1", []))
    assert jobs.read_notebook(outside)["path"] == "x.ipynb"


def test_the_current_notebook_comes_from_the_kernel_session(report, home, shell, monkeypatch):
    with pytest.raises(ValueError, match="^notebook: not given.*JPY_SESSION_NAME is not set"):
        jobs.read_notebook()
    # What jupyter-server gives the kernel: an absolute path, or one relative to the root.
    monkeypatch.setenv("JPY_SESSION_NAME", "reports/daily.ipynb")
    assert jobs.read_notebook()["path"] == "reports/daily.ipynb"
    monkeypatch.delenv("JPY_SESSION_NAME")
    shell.user_ns["__session__"] = str(report)
    assert jobs.read_notebook()["path"] == "reports/daily.ipynb"


def test_notebook_errors_come_before_any_request(home, no_hub):
    (home / "notes.txt").write_text("hello")
    (home / "broken.ipynb").write_text("{not json")
    (home / "list.ipynb").write_text("[1, 2]")
    with pytest.raises(FileNotFoundError, match="^notebook: no notebook file at .*missing.ipynb"):
        jobs.schedule("missing.ipynb", cron="0 6 * * *")
    with pytest.raises(ValueError, match=r"^notebook: .*notes.txt' is not a notebook \(expected a .ipynb"):
        jobs.schedule("notes.txt")
    with pytest.raises(ValueError, match=r"broken.ipynb' is not a notebook \(not JSON"):
        jobs.inspect("broken.ipynb")
    with pytest.raises(ValueError, match=r"list.ipynb' is not a notebook \(no nbformat cells"):
        jobs.schedule("list.ipynb")


def test_trigger_errors_come_before_any_request(report, no_hub):
    with pytest.raises(ValueError, match="not several: cron and once"):
        jobs.schedule(report, cron="0 6 * * *", once=True)
    # The same call without the mistake reaches for the (absent) hub: 502, no ValueError.
    with pytest.raises(JobsError) as error:
        jobs.schedule(report, cron="0 6 * * *")
    assert error.value.status == 502 and isinstance(error.value, ServiceError)
    assert "not-a-real-token" not in str(error.value)


def test_run_ids_and_job_references_are_checked(no_hub):
    with pytest.raises(ValueError, match="^run: expected a run id"):
        jobs.get_run("seventeen")
    with pytest.raises(ValueError, match="^job: expected a job id or name"):
        jobs.pause(True)
    with pytest.raises(ValueError, match="^job: expected a job id or name, got 1.5"):
        jobs.get_job(1.5)


def test_outputs_are_saved_under_a_safe_name():
    assert jobs.default_output_path({"id": 17, "job_name": "nightly-report"}) == \
        str(Path("job-outputs/nightly-report/run-17.ipynb"))
    assert jobs.default_output_path({"id": 3, "job_name": "../../etc/x y"}) == \
        str(Path("job-outputs/_.._etc_x_y/run-3.ipynb"))


# --- %schedule ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("n=3", ("n", 3)),
    ("alpha=0.5", ("alpha", 0.5)),
    ("flag=False", ("flag", False)),
    ("xs=[1, 2]", ("xs", [1, 2])),
    ("s='3'", ("s", "3")),
    ("name=hello world", ("name", "hello world")),
    ("when=2026-01-01", ("when", "2026-01-01")),
    ("empty=", ("empty", "")),
    ("expr=a=b", ("expr", "a=b")),
])
def test_parameter_values_are_literals_else_text(text, expected):
    assert parse_parameter(text) == expected


def test_the_schedule_command_line():
    args = make_schedule_parser().parse_args(
        ["--cron", "0 6 * * *", "--timezone", "Europe/Paris", "-p", "n=3", "-p", "label=x y",
         "--profile", "cpu-small", "--timeout", "600", "--retries", "2", "--notebook", "a.ipynb",
         "--name", "nightly", "--notify-url", "https://h.example/x", "--notify-on", "success"])
    assert (args.cron, args.timezone, args.profile, args.timeout, args.retries) == \
        ("0 6 * * *", "Europe/Paris", "cpu-small", 600, 2)
    assert dict(args.parameters) == {"n": 3, "label": "x y"}
    assert (args.notebook, args.name, args.notify_on, args.once, args.watch) == \
        ("a.ipynb", "nightly", ["success"], False, None)
    args = make_command_parser().parse_args(["output", "17", "out/x.ipynb", "--overwrite"])
    assert (args.command, args.run, args.path, args.overwrite) == ("output", 17, "out/x.ipynb", True)
    args = make_command_parser().parse_args(["run", "nightly", "-p", "n=4", "--wait"])
    assert (args.job, args.parameters, args.wait) == ("nightly", [("n", 4)], True)


@pytest.fixture
def jobs_shell(shell):
    """The shell with HubForge's extension loaded, as every HubForge kernel has it."""
    shell.run_line_magic("load_ext", "hubforge.singleuser")
    yield shell
    shell.run_line_magic("unload_ext", "hubforge.singleuser")


def test_help_is_printed_without_a_service(jobs_shell, capsys, monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    # Loading HubForge's extension registered the magic.
    assert isinstance(jobs_shell.magics_manager.registry.get("JobsMagics"), JobsMagics)
    for line in ("--help", "", "-h", "help"):
        assert jobs_shell.run_line_magic("schedule", line) is None
        assert capsys.readouterr().out == USAGE
    assert jobs_shell.run_line_magic("schedule", "output --help") is None
    assert "usage: %schedule output [-h] [--overwrite] RUN [PATH]" in capsys.readouterr().out


@pytest.mark.parametrize(("line", "message"), [
    ('--cron "0 6 * * *" --once', "argument --once: not allowed with argument --cron"),
    ("--once -p three", "expected NAME=VALUE with NAME a parameter name, got 'three'"),
    ("--retries many", "expected a whole number of 0 or more, got 'many'"),
    ("--missed sometimes", "invalid choice: 'sometimes'"),
    ("run", r"required: JOB\nusage: %schedule run"),
    ("cancel seventeen", "expected a whole number"),
    ("--timezone UTC", "^timezone: only a cron schedule has a timezone"),
    ("--once --notebook missing.ipynb", "^notebook: no notebook file at .*missing.ipynb"),
    ('--cron "0 6 * * *', "No closing quotation"),
])
def test_usage_errors_are_one_line_messages(jobs_shell, report, no_hub, line, message):
    with pytest.raises(UsageError, match=message):
        jobs_shell.run_line_magic("schedule", line)


def test_service_errors_show_the_message_not_a_traceback(jobs_shell, monkeypatch, capsys):
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "not-a-real-token")
    with pytest.raises(UsageError, match="^not running under JupyterHub: JUPYTERHUB_API_URL is not set$"):
        jobs_shell.run_line_magic("schedule", "list")
    result = jobs_shell.run_cell("%schedule runs nightly")
    assert isinstance(result.error_in_exec, UsageError)
    shown = capsys.readouterr()
    assert "Traceback" not in shown.out + shown.err
    assert "not-a-real-token" not in shown.out + shown.err


def test_the_magic_is_registered_and_imports_light():
    code = (
        "import sys\n"
        "from hubforge.singleuser.magics import MAGICS\n"
        "from hubforge.jobs.magics import JobsMagics\n"
        "assert JobsMagics in MAGICS\n"
        "heavy = {'pandas', 'ipywidgets', 'tqdm', 'papermill', 'nbclient', 'tornado', 'sqlalchemy'}\n"
        "heavy &= set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_package_exports_the_api():
    import hubforge.jobs

    missing = [name for name in jobs.__all__ if getattr(hubforge.jobs, name, None) is not getattr(jobs, name)]
    assert not missing, f"hubforge.jobs does not re-export {missing}"
    from hubforge.jobs.widgets import JobsWidget as widget

    assert hubforge.jobs.JobsWidget is widget


# --- the widget, from a parameters list ----------------------------------------------------

PARAMETERS = [
    {"name": "n", "type": "int", "default": "2", "help": "how <many>"},
    {"name": "alpha", "type": "float", "default": "0.1", "help": ""},
    {"name": "flag", "type": "bool", "default": "True", "help": ""},
    {"name": "label", "type": "str", "default": "'x'", "help": ""},
    {"name": "xs", "type": "list", "default": "[1, 2]", "help": ""},
    {"name": "when", "type": "str", "default": "datetime.now()", "help": ""},
    {"name": "count", "type": "int", "default": "None", "help": ""},
]
PROFILES = [{"slug": "cpu-small", "display_name": "Small <CPU>", "default": True}, "gpu"]


def test_form_fields_are_typed_from_the_defaults():
    fields = {f["name"]: f for f in form_fields(PARAMETERS)}
    assert {n: (f["kind"], f["input"], f["value"]) for n, f in fields.items()} == {
        "n": ("int", "int", 2),
        "alpha": ("float", "float", 0.1),
        "flag": ("bool", "bool", True),
        "label": ("str", "text", "x"),
        "xs": ("list", "text", "[1, 2]"),
        "when": ("str", "text", "datetime.now()"),  # an expression: shown as written
        "count": ("int", "text", "None"),           # no int default: typed in a text box
    }
    assert parse_field(fields["xs"], "[3]") == [3]
    with pytest.raises(ValueError, match=r"^xs: expected a list, like \[1, 2\], got 'some text'"):
        parse_field(fields["xs"], "some text")
    assert parse_field(fields["count"], "7") == 7
    assert parse_field(fields["count"], "None") is None
    anything = form_fields([{"name": "x", "type": "any", "default": "f()"}])[0]
    assert (anything["kind"], parse_field(anything, "some text"), parse_field(anything, "{'a': 1}")) == \
        ("literal", "some text", {"a": 1})
    typed = form_fields([{"name": "ys", "type": "list[int]", "default": "[]"}])[0]
    assert typed["kind"] == "list"
    with pytest.raises(ValueError, match="^count: expected a whole number, got 'seven'"):
        parse_field(fields["count"], "seven")


def shown_html(widget) -> str:
    """The HTML of every HTML widget in a tree."""
    from ipywidgets import HTML

    own = widget.value if isinstance(widget, HTML) else ""
    return own + "".join(shown_html(child) for child in getattr(widget, "children", ()))


@pytest.fixture
def widget(report):
    w = JobsWidget(str(report), notebook_parameters=PARAMETERS, profiles=PROFILES, refresh=False)
    yield w
    w.close()


def test_widget_form_from_a_parameters_list(widget):
    from ipywidgets import Checkbox, FloatText, IntText, Text

    w = widget
    assert w.error == "" and w.path == "reports/daily.ipynb"
    assert [type(w.inputs[n]) for n in ("n", "alpha", "flag", "label", "xs", "count")] == \
        [IntText, FloatText, Checkbox, Text, Text, Text]
    assert (w.inputs["n"].value, w.inputs["alpha"].value, w.inputs["flag"].value, w.inputs["label"].value) == \
        (2, 0.1, True, "x")
    assert w.profile_dropdown.options == (("(your default profile)", ""), ("Small <CPU> (your default)", "cpu-small"),
                                          ("gpu", "gpu"))
    assert w.timezone_text.value == "UTC" and w.trigger_choice.value == "once"
    assert "how &lt;many&gt;" in shown_html(w.box) and "how <many>" not in shown_html(w.box)

    # Only what the form changes is sent; the notebook's defaults apply to the rest.
    assert w.parameter_values() == {}
    w.inputs["n"].value = 5
    w.inputs["xs"].value = "[3, 4]"
    assert w.parameter_values() == {"n": 5, "xs": [3, 4]}

    # The cron and file fields show with their choice.
    assert w.cron_text.layout.display == "none" and w.watch_text.layout.display == "none"
    w.trigger_choice.value = "cron"
    assert w.cron_text.layout.display is None and w.timezone_text.layout.display is None
    assert w.watch_text.layout.display == "none"


def test_widget_marks_wrong_values_in_red(widget, no_hub):
    w = widget
    w.inputs["count"].value = "seven"   # checked as it is typed
    assert "expected a whole number" in w.input_errors["count"].value
    assert "#c62828" in w.input_errors["count"].value and "c62828" in str(w.inputs["count"].layout.border)
    w.schedule_button.click()           # refused before any request
    assert w.error == "count: expected a whole number, got 'seven'"
    assert "color:#c62828" in w.error_html.value
    w.inputs["count"].value = "7"
    assert w.input_errors["count"].value == "" and w.inputs["count"].layout.border is None

    w.trigger_choice.value = "cron"
    w.schedule_button.click()
    assert w.error.startswith("cron: give a cron expression")

    # A service failure shows the service's message (here: no hub to reach).
    w.cron_text.value = "0 6 * * *"
    w.schedule_button.click()
    assert "cannot reach the hub" in w.error and "not-a-real-token" not in w.error_html.value

    # The service's 400 about a parameter ("parameters.<name>: reason") marks that one.
    def refused():
        raise JobsError(400, "parameters.alpha: must be a float (the notebook's default is 0.1), got string \"x\"")

    w._guard(refused)
    assert w.error.startswith("parameters.alpha: must be a float")
    assert "must be a float" in w.input_errors["alpha"].value and w.input_errors["n"].value == ""


def test_widget_escapes_what_it_shows(widget, home, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_BASE_URL", "/@/space%20word/")
    saved = home / "job-outputs" / "a<b" / "run-1.ipynb"
    link = output_link(str(saved))
    assert link.startswith('<a href="/@/space%20word/user-redirect/lab/tree/job-outputs/a%3Cb/run-1.ipynb"')
    assert ">" + str(saved).replace("<", "&lt;") + "</a>" in link
    assert output_link("/elsewhere/x.ipynb") == "<code>/elsewhere/x.ipynb</code>"  # outside the root

    w = widget
    w.jobs = [{"id": 3, "name": "<script>x</script>", "trigger": {"type": "once"}, "paused": False}]
    w.runs = [{"id": 9, "job_name": "<img src=x>", "status": "failed", "trigger": "once",
               "reason": "'quoted' <b>", "started_at": "2026-11-27T06:00:03Z", "duration": 75.0,
               "has_output": True}]
    w._render_lists()
    shown = w._repr_html_() + shown_html(w.box)
    assert "<script>" not in shown and "<img" not in shown and "<b>'" not in shown
    assert "&lt;script&gt;" in shown and "&lt;img src=x&gt;" in shown
    assert "2026-11-27 06:00:03" in shown and "1 min 15 s" in shown
    assert not w.run_buttons[9]["output"].disabled and w.run_buttons[9]["cancel"].disabled
    assert set(w.job_buttons[3]) == {"run", "pause", "delete"}
    # Deleting asks for a second click first (this one sends nothing).
    w.job_buttons[3]["delete"].click()
    assert w.error == "" and w.job_buttons[3]["delete"].description == "Confirm delete"
    assert "Confirm delete" in w.notice_html.value


def test_durations():
    assert [format_duration(s) for s in (None, 0.25, 59.94, 75, 3600 * 2 + 61)] == \
        ["", "0.2 s", "59.9 s", "1 min 15 s", "2 h 1 min"]


# --- against the real jobs service (slow) --------------------------------------------------


@pytest.fixture(scope="module")
def jobs_user(hub, admin_token):
    """A hub user and a token of theirs; their jobs are deleted at the end."""
    name = "nbjobber"
    token = hub.make_user(admin_token, name)
    yield {"name": name, "token": token, "api_url": hub.api, "hub": hub}


@pytest.fixture
def as_user(jobs_user, home, monkeypatch):
    """This process (and a shell in it) talks to the jobs service as the user, like a kernel."""
    monkeypatch.setenv("JUPYTERHUB_API_URL", jobs_user["api_url"])
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", jobs_user["token"])
    monkeypatch.setenv("JUPYTERHUB_BASE_URL", "/@/space%20word/")
    yield jobs_user
    for job in jobs.list_jobs():
        jobs.delete(job["id"])


def why(run: dict, user: dict) -> str:
    """A failed run's reason, its log and the end of the hub's (and the service's) log."""
    return f"{run['reason']}\n--- run log:\n{jobs.log(run['id'])}\n--- hub log:\n{user['hub'].log()[-4000:]}"


def first_run(job: dict) -> dict:
    """The run a once-job started (the service may queue it just after answering)."""
    return wait_for(lambda: (jobs.runs(job["id"]) or [None])[0], 30, what=f"a run of job {job['id']}")


def cell_text(cell: dict) -> str:
    return "".join("".join(o.get("text", "")) if isinstance(o.get("text"), list) else o.get("text", "")
                   for o in cell.get("outputs", []))


@pytest.mark.slow
def test_a_once_job_runs_with_its_parameters(as_user, report, home, capsys):
    job = jobs.schedule(notebook=report, once=True, parameters={"n": 3})
    assert job["owner"] == as_user["name"] and job["name"] == "daily"
    assert job["notebook"] == "reports/daily.ipynb" and job["trigger"]["type"] == "once"
    assert job["parameters"] == {"n": 3}
    assert [(p["name"], p["type"]) for p in job["notebook_parameters"]] == [("n", "int")]

    run = jobs.wait(first_run(job)["id"], timeout=RUN_TIMEOUT, progress=True)
    assert run["status"] == "succeeded", why(run, as_user)
    assert run["parameters"] == {"n": 3} and run["has_output"]
    assert f"run {run['id']}: " in capsys.readouterr().err  # the progress bar (text, outside a notebook)

    path = jobs.output(run["id"])
    assert path == str(Path("job-outputs") / "daily" / f"run-{run['id']}.ipynb")
    nb = json.loads((home / path).read_text())
    assert cell_text(nb["cells"][-1]).strip() == "63"
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "n = 3" in "".join(injected[0]["source"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        jobs.output(run["id"])
    assert jobs.output(run["id"], "copy.ipynb") == "copy.ipynb"
    assert json.loads((home / "copy.ipynb").read_text()) == nb
    assert isinstance(jobs.log(run["id"]), str)

    # By name as well as by id; another run with its own parameters.
    assert jobs.get_job("daily")["id"] == job["id"]
    again = jobs.wait(jobs.run_now("daily", parameters={"n": 10})["id"], timeout=RUN_TIMEOUT)
    assert again["status"] == "succeeded" and again["trigger"] == "manual", why(again, as_user)
    nb = json.loads(Path(jobs.output(again["id"])).read_text())
    assert cell_text(nb["cells"][-1]).strip() == "210"
    assert [r["id"] for r in jobs.runs("daily")] == [again["id"], run["id"]]


@pytest.mark.slow
def test_the_magic_schedules_the_current_notebook(as_user, report, jobs_shell, capsys):
    jobs_shell.user_ns["__session__"] = str(report)   # what ipykernel sets in a notebook
    jobs_shell.run_line_magic("schedule", "--once -p n=3 --name from-magic")
    out = capsys.readouterr().out
    assert out.startswith("Job ") and "'from-magic' scheduled: once" in out
    job = jobs.get_job("from-magic")
    assert job["notebook"] == "reports/daily.ipynb" and job["parameters"] == {"n": 3}
    run = jobs.wait(first_run(job)["id"], timeout=RUN_TIMEOUT)
    assert run["status"] == "succeeded", why(run, as_user)

    frame = jobs_shell.run_line_magic("schedule", "runs from-magic")
    assert list(frame["id"]) == [run["id"]] and list(frame["status"]) == ["succeeded"]
    frame = jobs_shell.run_line_magic("schedule", "list")
    assert "from-magic" in list(frame["name"])
    capsys.readouterr()
    jobs_shell.run_line_magic("schedule", f"output {run['id']} out/run.ipynb")
    assert "saved to out/run.ipynb" in capsys.readouterr().out
    assert cell_text(json.loads(Path("out/run.ipynb").read_text())["cells"][-1]).strip() == "63"

    # A wrong type: the service's message, naming the parameter, without a traceback.
    with pytest.raises(UsageError, match=r"^parameters\.n: must be an int"):
        jobs_shell.run_line_magic("schedule", f"--once -p n=three --notebook {report}")


@pytest.mark.slow
def test_a_cron_job_is_paused_resumed_changed_and_deleted(as_user, report):
    job = jobs.schedule(report, name="nightly", cron="0 6 * * *", timezone="Europe/Paris", retries=1)
    assert job["trigger"] == {"type": "cron", "cron": "0 6 * * *", "timezone": "Europe/Paris"}
    assert job["retries"] == 1 and not job["paused"] and job["next_run"]
    assert jobs.runs(job["id"]) == []  # a cron job waits for its time

    assert jobs.pause("nightly")["paused"] is True
    assert jobs.get_job(job["id"])["paused"] is True
    assert jobs.resume(job["id"])["paused"] is False

    changed = jobs.update("nightly", timezone="UTC", retries=3)
    assert changed["trigger"] == {"type": "cron", "cron": "0 6 * * *", "timezone": "UTC"}
    assert changed["retries"] == 3

    # Edit the file, then send it again: the job's copy changes.
    report.write_text(report.read_text().replace("n = 2", "n = 5"))
    changed = jobs.update("nightly", notebook=True)
    assert [p["default"] for p in changed["notebook_parameters"]] == ["5"]

    with pytest.raises(JobsError) as error:
        jobs.schedule(report, name="nightly", cron="0 7 * * *")
    assert error.value.status == 409

    jobs.delete("nightly")
    with pytest.raises(JobsError) as error:
        jobs.get_job(job["id"])
    assert error.value.status == 404
    with pytest.raises(JobsError, match="no job named 'nightly'"):
        jobs.pause("nightly")


@pytest.mark.slow
def test_a_wrong_parameter_type_is_refused_with_its_name(as_user, report):
    with pytest.raises(JobsError) as error:
        jobs.schedule(report, parameters={"n": "three"})
    assert error.value.status == 400
    assert error.value.message.startswith("parameters.n: must be an int")
    with pytest.raises(JobsError) as error:
        jobs.schedule(report, parameters={"nope": 1})
    assert error.value.status == 400 and error.value.message.startswith("parameters.nope: ")
    assert jobs.list_jobs() == []

    info = jobs.inspect(report)
    assert info["kernel"] == "python3"
    assert [(p["name"], p["type"], p["default"]) for p in info["parameters"]] == [("n", "int", "2")]


@pytest.mark.slow
def test_a_run_is_cancelled(as_user, home):
    slow = write_notebook(home / "slow.ipynb", ("import time\ntime.sleep(600)", []))
    job = jobs.schedule(slow)
    run = jobs.cancel(first_run(job)["id"])
    assert run["status"] in ("cancelled", "running", "queued")
    run = jobs.wait(run["id"], timeout=RUN_TIMEOUT)
    assert run["status"] == "cancelled" and as_user["name"] in run["reason"]
    with pytest.raises(JobsError) as error:
        jobs.cancel(run["id"])
    assert error.value.status == 409


@pytest.mark.slow
def test_the_widget_schedules_and_opens_an_output(as_user, report, home):
    w = JobsWidget(report)
    try:
        assert w.error == "" and list(w.inputs) == ["n"] and w.inputs["n"].value == 2
        assert ("(your default profile)", "") in w.profile_dropdown.options
        w.inputs["n"].value = 4
        w.schedule_button.click()
        assert w.error == "", w.error
        assert [j["name"] for j in w.jobs] == ["daily"] and w.jobs[0]["parameters"] == {"n": 4}

        run = jobs.wait(first_run(w.jobs[0])["id"], timeout=RUN_TIMEOUT)
        assert run["status"] == "succeeded", why(run, as_user)
        w.refresh_button.click()
        assert [r["id"] for r in w.runs] == [run["id"]]
        w.run_buttons[run["id"]]["output"].click()
        assert w.error == "", w.error
        saved = w.output_paths[run["id"]]
        assert cell_text(json.loads((home / saved).read_text())["cells"][-1]).strip() == "84"
        assert f'href="/@/space%20word/user-redirect/lab/tree/{saved}"' in w.notice_html.value

        # Delete asks for a second click.
        job_id = w.jobs[0]["id"]
        w.job_buttons[job_id]["delete"].click()
        assert [j["id"] for j in w.jobs] == [job_id]
        assert w.job_buttons[job_id]["delete"].description == "Confirm delete"
        w.job_buttons[job_id]["delete"].click()
        assert w.error == "" and w.jobs == [] and w.runs == []
    finally:
        w.close()
