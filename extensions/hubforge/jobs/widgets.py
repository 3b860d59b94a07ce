"""The jobs widget: schedule a notebook from a form, and watch its jobs and runs.

``hubforge.jobs.JobsWidget()`` (or ``%schedule widget``) as a cell's last expression
shows it. `JobsWidget` is a controller that owns the state and builds standard
ipywidgets: one input per parameter of the notebook's ``parameters`` cell (typed as the
service reads it, prefilled with the defaults), a profile list, the trigger (run once
now, a cron expression with its timezone, or a file glob), timeout and retries, and a
Schedule button; below, the notebook's jobs (run now, pause or resume, delete) and their
latest runs (status, trigger, start, duration, progress), with a button that saves a
run's output notebook and links it, and one that cancels a run. Refresh reads the jobs
and runs again; every action does too.

Every action is a call to the `hubforge.jobs` function a script would make, so the
widget can be driven from Python, which is how the tests drive it::

    w = JobsWidget("report.ipynb")
    w.inputs["alpha"].value = 0.5
    w.trigger_choice.value = "cron"; w.cron_text.value = "0 6 * * *"
    w.schedule_button.click()           # hubforge.jobs.schedule("report.ipynb", ...)
    w.refresh()                          # w.jobs, w.runs
    w.run_buttons[17]["output"].click()  # hubforge.jobs.output(17): w.output_paths[17]

A refused request or a wrong value shows its message in red (a wrong parameter's next
to its input) and leaves ``w.error`` set to it; nothing raises into the kernel. Text
from the notebook and the service is escaped before it becomes HTML. Without
ipywidgets the widget shows the notebook's jobs and runs as HTML.
"""

from __future__ import annotations

import ast
import html
import logging
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..client import ServiceError
from . import client
from .cli import parse_value
from .magics import describe_trigger

log = logging.getLogger(__name__)

#: Runs listed per job, and in all.
RUNS_PER_JOB = 10
MAX_RUNS = 20
#: The value of the profile list that leaves the choice to the service.
DEFAULT_PROFILE = ""

_RED = "#c62828"
_STATUS_COLOURS = {"succeeded": "#2e7d32", "failed": _RED, "timed_out": _RED,
                   "cancelled": "#757575", "running": "#1565c0", "queued": "#6d4c41"}
#: The service's type names (papermill's, or the default's type), as the kinds the form
#: checks; ``list[int]`` is a list. Anything else ("any") is any Python literal.
_KINDS = {"int": "int", "integer": "int", "float": "float", "number": "float",
          "bool": "bool", "boolean": "bool", "str": "str", "string": "str",
          "list": "list", "tuple": "list", "dict": "dict"}
_MISSING = object()


def form_fields(parameters: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The form's inputs for a notebook's parameters (as ``inspect`` lists them).

    Each is ``{"name", "kind", "input", "value", "help"}``: ``kind`` is the value's
    type (int, float, bool, str, list, dict, or ``literal`` for anything else); ``input`` is the
    widget that edits it: ``int``, ``float``, ``bool`` for a default of that type, else
    ``text`` (a string; for kinds other than str it is read as a Python literal), and
    ``value`` the input's initial value, from the default.
    """
    fields = []
    for p in parameters:
        kind = _KINDS.get(str(p.get("type") or "").split("[", 1)[0].strip().lower(), "literal")
        source = p.get("default")
        try:
            default = ast.literal_eval(source) if isinstance(source, str) else source
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default = _MISSING  # an expression (``datetime.now()``): shown as written
        if kind == "int" and isinstance(default, int) and not isinstance(default, bool):
            widget, value = "int", default
        elif kind == "float" and isinstance(default, (int, float)) and not isinstance(default, bool):
            widget, value = "float", float(default)
        elif kind == "bool" and isinstance(default, bool):
            widget, value = "bool", default
        elif kind == "str" and isinstance(default, str):
            widget, value = "text", default
        else:
            widget, value = "text", "" if source is None else str(source)
        fields.append({"name": str(p["name"]), "kind": kind, "input": widget, "value": value,
                       "help": str(p.get("help") or "")})
    return fields


def parse_field(field: Mapping[str, Any], value: Any) -> Any:
    """An input's value as the parameter's type; ValueError naming the parameter.

    A text box of another kind than str holds a Python literal; ``None`` fits any kind
    (the service lets a parameter be None)."""
    if field["input"] != "text" or field["kind"] == "str":
        return value
    parsed = parse_value(value) if field["kind"] == "literal" else _literal(value)
    kind = field["kind"]
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, (list, tuple)),
        "dict": lambda v: isinstance(v, dict),
        "literal": lambda v: True,
    }[kind]
    if parsed is _MISSING or not (parsed is None or ok(parsed)):
        raise ValueError(f"{field['name']}: expected {_a(kind)}, got {value!r}")
    return parsed


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _MISSING


def _a(kind: str) -> str:
    return {"int": "a whole number", "float": "a number", "bool": "True or False",
            "list": "a list, like [1, 2]", "dict": "a dict, like {'a': 1}"}.get(kind, kind)


def profile_options(profiles: list[Any]) -> list[tuple[str, str]]:
    """``(label, value)`` pairs for the profile list; the first leaves the default."""
    options = [("(your default profile)", DEFAULT_PROFILE)]
    for p in profiles:
        if isinstance(p, Mapping):
            value = str(p.get("slug") or p.get("name") or "")
            label = str(p.get("display_name") or value) + (" (your default)" if p.get("default") else "")
        else:
            value = label = str(p)
        if value:
            options.append((label, value))
    return options


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _time(stamp: str | None) -> str:
    return (stamp or "").replace("T", " ").removesuffix("Z").split(".")[0]


def _progress(run: Mapping[str, Any]) -> str:
    progress = run.get("progress") or {}
    if progress.get("cells") and run.get("status") in ("running", "queued"):
        return f"cell {progress.get('cell') or 0} of {progress['cells']}"
    return ""


def _status_html(status: str) -> str:
    colour = _STATUS_COLOURS.get(status, "inherit")
    return f"<span style='color:{colour}'>{html.escape(status)}</span>"


def output_link(path: str, environ: Mapping[str, str] | None = None) -> str:
    """A link that opens the saved notebook `path` in JupyterLab, through the hub.

    ``user-redirect`` goes to the user's own server, under the hub's base URL
    (``JUPYTERHUB_BASE_URL``). A file outside the server's root cannot be opened there:
    just its path.
    """
    environ = os.environ if environ is None else environ
    absolute = Path(path).resolve()
    text = html.escape(str(path))
    try:
        relative = absolute.relative_to(client.server_root()).as_posix()
    except ValueError:
        return f"<code>{text}</code>"
    base = environ.get("JUPYTERHUB_BASE_URL") or "/"
    base = base if base.endswith("/") else base + "/"
    href = html.escape(f"{base}user-redirect/lab/tree/{urllib.parse.quote(relative)}", quote=True)
    return f'<a href="{href}" target="_blank" rel="noopener noreferrer">{text}</a>'


class JobsWidget:
    """Schedule `notebook` (default: this kernel's, as saved) and follow its jobs.

    `notebook_parameters` (``inspect``'s list) and `profiles` (``profiles()``'s list)
    skip asking the service for them; with `refresh` False the jobs and runs are not
    read until `refresh` is called. Together they build the form without a service.

    State (read it): ``path`` (the notebook, relative to your home), ``parameters``,
    ``fields`` (`form_fields` of them), ``profiles``, ``jobs`` (this notebook's),
    ``runs`` (theirs, newest first), ``output_paths`` (run id: saved output notebook),
    ``error`` (the last action's failure, or ""), ``parameter_errors`` (name: message),
    ``notice`` (what the last action did).
    """

    def __init__(self, notebook: str | os.PathLike | None = None, *,
                 notebook_parameters: list[Mapping[str, Any]] | None = None,
                 profiles: list[Any] | None = None, refresh: bool = True) -> None:
        self.notebook = notebook
        self.path: str | None = None
        self.kernel: str | None = None
        self.parameters: list[Mapping[str, Any]] = list(notebook_parameters or [])
        self.profiles: list[Any] = list(profiles or [])
        self.jobs: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.output_paths: dict[int, str] = {}
        self.error = ""
        self.parameter_errors: dict[str, str] = {}
        self.notice = ""
        self.box: Any = None
        self.inputs: dict[str, Any] = {}
        self.job_buttons: dict[int, dict[str, Any]] = {}
        self.run_buttons: dict[int, dict[str, Any]] = {}
        self._confirm_delete: int | None = None
        self._guard(self._locate)
        if notebook_parameters is None and self.path is not None:
            self._guard(self._inspect)
        if profiles is None:
            self._guard(self._read_profiles)
        self.fields = form_fields(self.parameters)
        self._build()
        if refresh:
            self.refresh()
        else:
            self._sync()

    # --- actions (the buttons call these) ---------------------------------------------

    def parameter_values(self) -> dict[str, Any]:
        """The parameters the form changes from the notebook's defaults, typed.

        Raises ValueError naming the first wrong one; every wrong one is marked.
        """
        self._need_controls()
        values, errors = {}, {}
        for field in self.fields:
            widget = self.inputs[field["name"]]
            if widget.value == field["value"]:
                continue  # unchanged: the notebook's default applies
            try:
                values[field["name"]] = parse_field(field, widget.value)
            except ValueError as e:
                errors[field["name"]] = str(e)
        self.parameter_errors = errors
        if errors:
            raise ValueError(next(iter(errors.values())))
        return values

    def schedule(self) -> dict[str, Any]:
        """Create a job of the notebook as the form says; returns it."""
        self._need_controls()
        parameters = self.parameter_values()
        trigger: dict[str, Any] = {}
        choice = self.trigger_choice.value
        if choice == "cron":
            cron = self.cron_text.value.strip()
            if not cron:
                raise ValueError("cron: give a cron expression, e.g. 0 6 * * * (06:00 every day)")
            trigger = {"cron": cron, "timezone": self.timezone_text.value.strip() or None}
        elif choice == "watch":
            glob = self.watch_text.value.strip()
            if not glob:
                raise ValueError("watch: give a file pattern under your home, e.g. incoming/*.csv")
            trigger = {"watch": glob}
        else:
            trigger = {"once": True}
        job = client.schedule(
            self.notebook, name=self.name_text.value.strip() or None,
            parameters=parameters or None, profile=self.profile_dropdown.value or None,
            timeout=self.timeout_input.value or None, retries=self.retries_input.value,
            **trigger)
        self.notice = f"Job {job['id']} {job.get('name', '')!r} scheduled: {describe_trigger(job.get('trigger'))}."
        self._read_lists()
        return job

    def refresh(self) -> None:
        """Read the notebook's jobs and their runs again."""
        self._guard(self._read_lists)

    def run_now(self, job_id: int) -> dict[str, Any]:
        run = client.run_now(job_id)
        self.notice = f"Run {run['id']} of job {run.get('job_name', job_id)!r} {run.get('status', 'queued')}."
        self._read_lists()
        return run

    def toggle_pause(self, job_id: int) -> dict[str, Any]:
        """Pause the job, or resume it if it is paused."""
        job = self._job(job_id)
        job = client.resume(job_id) if job.get("paused") else client.pause(job_id)
        self.notice = f"Job {job['id']} {job.get('name', '')!r} {'paused' if job.get('paused') else 'resumed'}."
        self._read_lists()
        return job

    def delete(self, job_id: int) -> None:
        """Delete the job; from the button, the first click asks for a second one."""
        client.delete(job_id)
        self._confirm_delete = None
        self.notice = f"Job {job_id} deleted, with its runs and outputs."
        self._read_lists()

    def cancel(self, run_id: int) -> dict[str, Any]:
        run = client.cancel(run_id)
        self.notice = f"Run {run['id']} {run.get('status', '')}."
        self._read_lists()
        return run

    def open_output(self, run_id: int) -> str:
        """Save the run's output notebook (once) and show a link to it; returns its path."""
        run = next((r for r in self.runs if r["id"] == run_id), None) or client.get_run(run_id)
        path = client.default_output_path(run)
        if not Path(path).exists():  # an output does not change: a saved copy is kept
            path = client.output(run_id, path)
        self.output_paths[run_id] = path
        self.notice = f"Run {run_id}'s output notebook: {path}"
        return path

    # --- internals --------------------------------------------------------------------

    def _locate(self) -> None:
        self.path = client.relative_path(client.notebook_path(self.notebook))

    def _inspect(self) -> None:
        info = client.inspect(self.notebook)
        self.kernel = info.get("kernel")
        self.parameters = list(info.get("parameters") or [])

    def _read_profiles(self) -> None:
        self.profiles = client.profiles()

    def _read_lists(self) -> None:
        jobs = client.list_jobs()
        self.jobs = [j for j in jobs if self.path is None or j.get("notebook") == self.path]
        found: list[dict[str, Any]] = []
        for job in self.jobs:
            found.extend(client.runs(int(job["id"]), limit=RUNS_PER_JOB))
        self.runs = sorted(found, key=lambda r: r["id"], reverse=True)[:MAX_RUNS]
        self._render_lists()

    def _job(self, job_id: int) -> dict[str, Any]:
        return next((j for j in self.jobs if j["id"] == job_id), None) or client.get_job(job_id)

    def _need_controls(self) -> None:
        if self.box is None:
            raise ValueError("the jobs form needs ipywidgets; without it, use hubforge.jobs.schedule")

    def _guard(self, action: Any, *args: Any) -> Any:
        """Run an action; show its failure in red instead of raising."""
        self.error = ""
        try:
            return action(*args)
        except (ServiceError, ValueError, OSError) as exc:
            self.error = getattr(exc, "message", None) or str(exc)
            if isinstance(exc, ServiceError) and exc.status == 400:
                self._mark_parameters(exc.message)
            return None
        except Exception as exc:  # a bug: log it, and show it rather than break the widget
            log.exception("Jobs widget action %s failed", getattr(action, "__name__", action))
            self.error = f"{type(exc).__name__}: {exc}"
            return None
        finally:
            self._sync()

    def _mark_parameters(self, message: str) -> None:
        """Mark the parameter a 400 answer is about: the service's messages start with
        the field, ``parameters.<name>: <reason>``."""
        match = re.match(r"parameters\.(\w+)\s*:", message)
        if match and match.group(1) in self.inputs:
            self.parameter_errors[match.group(1)] = message

    def _click(self, action: Any, *args: Any) -> Any:
        return lambda _button: self._guard(action, *args)

    # --- the widgets ------------------------------------------------------------------

    def _build(self) -> None:
        try:
            from ipywidgets import (HTML, BoundedIntText, Button, Checkbox, Dropdown, FloatText,
                                    GridBox, HBox, IntText, Layout, RadioButtons, Text, VBox)
        except ImportError:
            return
        wide = {"description_width": "10em"}
        self._w = {"HTML": HTML, "Button": Button, "HBox": HBox, "Layout": Layout, "GridBox": GridBox}
        rows = []
        self.input_errors: dict[str, Any] = {}
        for field in self.fields:
            kind = {"int": IntText, "float": FloatText, "bool": Checkbox}.get(field["input"], Text)
            options = {"indent": False} if kind is Checkbox else {"style": wide}
            widget = kind(value=field["value"], description=field["name"],
                          description_allow_html=False, tooltip=field["help"], **options)
            widget.observe(self._on_parameter, names="value")
            self.inputs[field["name"]] = widget
            self.input_errors[field["name"]] = HTML()
            help_text = (f"<span style='color:#757575'>{html.escape(field['help'])}</span>"
                         if field["help"] else "")
            rows.append(HBox([widget, HTML(help_text), self.input_errors[field["name"]]]))
        if not rows:
            rows.append(HTML("<i>This notebook has no <code>parameters</code> cell: "
                             "its runs take no parameters.</i>"))
        self.name_text = Text(description="Job name", placeholder=Path(self.path or "notebook").stem,
                              style=wide)
        options = profile_options(self.profiles)
        self.profile_dropdown = Dropdown(description="Profile", options=options,
                                         value=DEFAULT_PROFILE, style=wide)
        self.trigger_choice = RadioButtons(
            description="Run", style=wide, value="once",
            options=[("once, now", "once"), ("on a cron schedule", "cron"),
                     ("when a file lands", "watch")])
        self.cron_text = Text(description="Cron", placeholder="0 6 * * *  (06:00 every day)", style=wide)
        self.timezone_text = Text(description="Timezone", value="UTC", style=wide)
        self.watch_text = Text(description="Files", placeholder="incoming/*.csv", style=wide)
        self.trigger_choice.observe(lambda _change: self._sync(), names="value")
        self.timeout_input = BoundedIntText(description="Timeout (s)", value=0, min=0,
                                            max=10**7, style=wide,
                                            tooltip="0: the platform's default")
        self.retries_input = BoundedIntText(description="Retries", value=0, min=0, max=100, style=wide)
        self.schedule_button = Button(description="Schedule", icon="clock", button_style="primary",
                                      tooltip="Create the job")
        self.refresh_button = Button(description="Refresh", icon="refresh",
                                     tooltip="Read the jobs and runs again")
        self.schedule_button.on_click(self._click(self.schedule))
        self.refresh_button.on_click(self._click(self._read_lists))
        self.error_html = HTML()
        self.notice_html = HTML()
        self.jobs_box = VBox()
        self.runs_grid = GridBox(layout=Layout(
            grid_template_columns="repeat(7, max-content) max-content max-content", grid_gap="2px 12px"))
        title = html.escape(self.path or "this notebook")
        self.box = VBox([
            HTML(f"<b>Schedule</b> <code>{title}</code>"),
            VBox(rows),
            self.profile_dropdown,
            self.trigger_choice,
            self.cron_text, self.timezone_text, self.watch_text,
            HBox([self.timeout_input, self.retries_input]),
            self.name_text,
            HBox([self.schedule_button, self.refresh_button]),
            self.error_html,
            self.notice_html,
            HTML("<b>Jobs</b>"),
            self.jobs_box,
            HTML("<b>Runs</b>"),
            self.runs_grid,
        ])
        self._render_lists()

    def _render_lists(self) -> None:
        """Rebuild the rows of jobs and runs (with their buttons) from the state."""
        if self.box is None:
            return
        HTML, Button, HBox = self._w["HTML"], self._w["Button"], self._w["HBox"]
        for old in list(self.jobs_box.children) + list(self.runs_grid.children):
            _close_tree(old)
        self.job_buttons, self.run_buttons = {}, {}
        job_rows = []
        for job in self.jobs:
            job_id = int(job["id"])
            buttons = {
                "run": Button(description="Run now", icon="play"),
                "pause": Button(description="Resume" if job.get("paused") else "Pause",
                                icon="play-circle" if job.get("paused") else "pause"),
                "delete": Button(description="Confirm delete" if self._confirm_delete == job_id else "Delete",
                                 icon="trash", button_style="danger"),
            }
            buttons["run"].on_click(self._click(self.run_now, job_id))
            buttons["pause"].on_click(self._click(self.toggle_pause, job_id))
            buttons["delete"].on_click(self._click(self._delete_clicked, job_id))
            self.job_buttons[job_id] = buttons
            job_rows.append(HBox([HTML(_job_html(job)), *buttons.values()]))
        self.jobs_box.children = job_rows or [HTML("<i>No jobs for this notebook yet.</i>")]
        cells = [HTML(f"<b>{name}</b>") for name in
                 ("Run", "Job", "Status", "Trigger", "Started", "Duration", "Progress", "", "")]
        for run in self.runs:
            run_id = int(run["id"])
            status = str(run.get("status", ""))
            output = Button(description="Open output", icon="file", disabled=not run.get("has_output"))
            cancel = Button(description="Cancel", icon="stop",
                            disabled=status not in ("queued", "running"))
            output.on_click(self._click(self.open_output, run_id))
            cancel.on_click(self._click(self.cancel, run_id))
            self.run_buttons[run_id] = {"output": output, "cancel": cancel}
            reason = html.escape(str(run.get("reason") or ""), quote=True)
            cells += [
                HTML(str(run_id)),
                HTML(html.escape(str(run.get("job_name", "")))),
                HTML(f"<span title='{reason}'>{_status_html(status)}</span>"),
                HTML(html.escape(str(run.get("trigger", "")))),
                HTML(html.escape(_time(run.get("started_at")))),
                HTML(html.escape(format_duration(run.get("duration")))),
                HTML(html.escape(_progress(run))),
                output, cancel,
            ]
        self.runs_grid.children = cells if self.runs else [HTML("<i>No runs yet.</i>")]

    def _delete_clicked(self, job_id: int) -> None:
        if self._confirm_delete != job_id:
            self._confirm_delete = job_id
            self.notice = f"Click “Confirm delete” to delete job {job_id} with its runs and outputs."
            self._render_lists()
            return
        self.delete(job_id)

    def _sync(self) -> None:
        """Make the widgets show the state (messages, marks, the trigger's fields)."""
        if self.box is None:
            return
        self.error_html.value = (f"<span style='color:{_RED}'>{html.escape(self.error)}</span>"
                                 if self.error else "")
        self.notice_html.value = self._notice_html()
        for name, label in self.input_errors.items():
            message = self.parameter_errors.get(name, "")
            label.value = f"<span style='color:{_RED}'>{html.escape(message)}</span>" if message else ""
            self.inputs[name].layout.border = f"1px solid {_RED}" if message else None
        choice = self.trigger_choice.value
        self.cron_text.layout.display = self.timezone_text.layout.display = (
            None if choice == "cron" else "none")
        self.watch_text.layout.display = None if choice == "watch" else "none"

    def _notice_html(self) -> str:
        lines = [html.escape(self.notice)] if self.notice else []
        lines += [f"Output of run {run_id}: {output_link(path)}"
                  for run_id, path in sorted(self.output_paths.items(), reverse=True)]
        return "<br>".join(lines)

    def _on_parameter(self, change: dict[str, Any]) -> None:
        """Check an edited value at once: a wrong one turns red."""
        name = change["owner"].description
        field = next(f for f in self.fields if f["name"] == name)
        try:
            parse_field(field, change["new"])
        except ValueError as e:
            self.parameter_errors[name] = str(e)
        else:
            self.parameter_errors.pop(name, None)
        self._sync()

    def close(self) -> None:
        """Close the widgets (the jobs are not touched)."""
        if self.box is not None:
            _close_tree(self.box)

    # --- display ----------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<JobsWidget notebook={self.path or 'unknown'} jobs={len(self.jobs)} runs={len(self.runs)}>"

    def _repr_html_(self) -> str:
        error = f"<p style='color:{_RED}'>{html.escape(self.error)}</p>" if self.error else ""
        jobs = "".join(f"<li>{_job_html(j)}</li>" for j in self.jobs) or "<li><i>none</i></li>"
        rows = "".join(
            f"<tr><td>{int(r['id'])}</td><td>{html.escape(str(r.get('job_name', '')))}</td>"
            f"<td>{_status_html(str(r.get('status', '')))}</td>"
            f"<td>{html.escape(str(r.get('trigger', '')))}</td>"
            f"<td>{html.escape(_time(r.get('started_at')))}</td>"
            f"<td>{html.escape(format_duration(r.get('duration')))}</td>"
            f"<td>{html.escape(_progress(r))}</td></tr>" for r in self.runs)
        return (f"<p><b>Jobs of</b> <code>{html.escape(self.path or 'this notebook')}</code></p>"
                f"{error}<ul>{jobs}</ul>"
                "<table><tr><th>Run</th><th>Job</th><th>Status</th><th>Trigger</th>"
                f"<th>Started</th><th>Duration</th><th>Progress</th></tr>{rows}</table>")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        if self.box is not None:
            return self.box._repr_mimebundle_(**kwargs)
        return {"text/plain": repr(self), "text/html": self._repr_html_()}


def _job_html(job: Mapping[str, Any]) -> str:
    parts = [f"<b>{html.escape(str(job.get('name', '')))}</b> (job {int(job['id'])})",
             html.escape(describe_trigger(job.get("trigger")))]
    if job.get("paused"):
        parts.append("<i>paused</i>")
    elif job.get("next_run"):
        parts.append(f"next {html.escape(_time(job['next_run']))}")
    last = job.get("last_run") or {}
    if last.get("status"):
        parts.append(f"last run {_status_html(str(last['status']))}")
    return " · ".join(parts)


def _close_tree(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()
