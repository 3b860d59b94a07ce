"""``hubforge jobs``: scheduled notebooks from a shell or CI.

Each command is one or a few calls to the ``jobs`` hub service's REST API (docs/jobs.md)
through `hubforge.client.ServiceClient`::

    hubforge jobs create report.ipynb --cron "0 6 * * *" --timezone UTC -p alpha=0.5
    hubforge jobs list
    hubforge jobs run nightly-report --wait
    hubforge jobs output 17 -o out.ipynb

Where the service is: ``--hub-url`` (the hub's public URL, prefix included), reached
through the hub's proxy at ``<hub-url>services/jobs/``, else found from the environment
as :mod:`hubforge.clitools` describes. The token is ``--token``, else
``$JUPYTERHUB_API_TOKEN``, else ``$HUBFORGE_TOKEN``; it is never printed.

Output is aligned tables with local times, or the service's JSON with ``--json``. A
failure prints ``hubforge jobs: error: <message> (HTTP <status>)`` on stderr and exits
with 1; ``wait`` (and ``run --wait``) exit with 0 only when the run succeeded.

The request bodies are built by pure functions (`job_body`, `parse_parameter`, ...), so
they are tested without a service.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import clitools
from ..client import ServiceClient, ServiceError
from ..clitools import (  # noqa: F401 (hub_url_from_api_url: tests import it from here)
    CommandError,
    OptionError,
    confirm_delete,
    hub_url_from_api_url,
    local_time,
    one_line,
    print_json,
    table,
)

#: The hub service's name.
SERVICE = "jobs"
#: Seconds one request may take: creating a job uploads the notebook, which the
#: service reads before it answers.
REQUEST_TIMEOUT = 30.0
#: Seconds between two looks at a run in ``wait``.
POLL_INTERVAL = 1.0
#: Failed looks in a row (the service unreachable or slow) after which ``wait`` gives up.
POLL_FAILURES = 5
STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled")
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
NOTIFY_EVENTS = ("failure", "success")
MISSED = ("run_once", "skip")


# --- parsing and request bodies (pure) ---------------------------------------------------


def parse_value(text: str) -> Any:
    """A parameter value: a Python literal (``0.5``, ``True``, ``[1, 2]``, ``'x'``), else the text.

    Only values JSON can carry are taken as literals (a tuple becomes a list); anything
    else (``b'x'``, ``{1, 2}``, ``1j``, a name) stays text, as it was typed.
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return text
    return value


def parse_parameter(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` as ``(name, value)``; see `parse_value`. An argparse ``type``."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME a parameter name, got {text!r}")
    return name, parse_value(value)


def parse_parameters(pairs: Iterable[tuple[str, Any]] | None) -> dict[str, Any]:
    """``-p`` pairs as a dict; a name given twice keeps its last value."""
    return dict(pairs or ())


def parse_notify_on(text: str) -> list[str]:
    """``failure,success`` as ``["failure", "success"]``. An argparse ``type``."""
    events = [e.strip() for e in text.split(",") if e.strip()]
    wrong = [e for e in events if e not in NOTIFY_EVENTS]
    if not events or wrong:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {' and '.join(NOTIFY_EVENTS)}, got {text!r}")
    return list(dict.fromkeys(events))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def trigger_body(*, cron: str | None = None, timezone: str | None = None, once: bool = False,
                 watch: str | None = None, watch_parameter: str | None = None,
                 current: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``trigger`` field for the trigger options given, or None for none.

    ``current`` is the job's trigger when editing: ``--timezone`` or
    ``--watch-parameter`` alone complete it.
    """
    given = [name for name, value in (("--cron", cron), ("--once", once), ("--watch", watch)) if value]
    if len(given) > 1:
        raise OptionError(f"give one trigger, not {' and '.join(given)}")
    current = current or {}
    if cron:
        trigger: dict[str, Any] = {"type": "cron", "cron": cron}
        timezone = timezone or (current.get("timezone") if current.get("type") == "cron" else None)
        if timezone:
            trigger["timezone"] = timezone
        if watch_parameter:
            raise OptionError("--watch-parameter goes with --watch")
        return trigger
    if watch:
        trigger = {"type": "watch", "path": watch}
        parameter = watch_parameter or (current.get("parameter") if current.get("type") == "watch" else None)
        if parameter:
            trigger["parameter"] = parameter
        if timezone:
            raise OptionError("--timezone goes with --cron")
        return trigger
    if once:
        if timezone or watch_parameter:
            raise OptionError("--once takes no --timezone or --watch-parameter")
        return {"type": "once"}
    if timezone:
        if current.get("type") != "cron":
            why = " (this job has no cron schedule)" if current else ""
            raise OptionError(f"--timezone goes with --cron{why}")
        return {**current, "timezone": timezone}
    if watch_parameter:
        if current.get("type") != "watch":
            why = " (this job watches no files)" if current else ""
            raise OptionError(f"--watch-parameter goes with --watch{why}")
        return {**current, "parameter": watch_parameter}
    return None


def job_body(options: Mapping[str, Any], *, notebook: Mapping[str, Any] | None = None,
             current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The body of ``POST api/jobs`` (``current`` None) or ``PATCH api/jobs/<id>``.

    ``options`` holds the command's option values by their ``argparse`` names (``cron``,
    ``parameters``, ``notify_on``...); None means "not given", and what is not given is
    left out, so the service's defaults (create) or the job's values (edit) stay.
    ``notebook`` is ``{"path", "content"}``. When editing, ``current`` is the job, and a
    part of a field completes its current value: ``--timezone`` alone keeps the cron
    expression, ``--notify-on`` alone the webhook, ``--keep-days`` alone ``keep_runs``,
    and ``-p`` changes the values it names and keeps the others.
    """
    current = current or {}
    body: dict[str, Any] = {}
    if notebook is not None:
        body["notebook"] = dict(notebook)
    if options.get("name") is not None:
        body["name"] = options["name"]
    trigger = trigger_body(
        cron=options.get("cron"), timezone=options.get("timezone"), once=bool(options.get("once")),
        watch=options.get("watch"), watch_parameter=options.get("watch_parameter"),
        current=current.get("trigger"),
    )
    if trigger is not None:
        body["trigger"] = trigger
    parameters = options.get("parameters")
    if parameters:
        body["parameters"] = {**(current.get("parameters") or {}), **parameters}
    for key in ("profile", "timeout", "retries", "retry_backoff", "missed"):
        if options.get(key) is not None:
            body[key] = options[key]
    url, on = options.get("notify_url"), options.get("notify_on")
    if url is not None or on is not None:
        notify = dict(current.get("notify") or {})
        url = url or notify.get("url")
        if not url:
            raise OptionError("--notify-on goes with --notify-url (the webhook to call)")
        body["notify"] = {"url": url, "on": list(on or notify.get("on") or ["failure"])}
    retention = {k: options[k] for k in ("keep_runs", "keep_days") if options.get(k) is not None}
    if retention:
        body["retention"] = {**(current.get("retention") or {}), **retention}
    if options.get("paused"):
        body["paused"] = True
    return body


def run_body(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The body of ``POST api/jobs/<id>/runs``: the parameters overriding the job's."""
    return {"parameters": dict(parameters)} if parameters else {}


def notebook_path_in_home(file: Path, path_in_home: str | None = None, home: Path | None = None) -> str:
    """The job's ``notebook.path``: ``path_in_home`` if given, else ``file`` relative to
    ``home`` (default ``~``), else (a file outside home) its name."""
    if path_in_home:
        path = Path(path_in_home)
        if path.is_absolute() or ".." in path.parts:
            raise OptionError(f"--path-in-home: expected a path relative to your home, got {path_in_home!r}")
        return path.as_posix()
    home = (home or Path.home()).resolve()
    try:
        return file.resolve().relative_to(home).as_posix()
    except ValueError:
        return file.name


def read_notebook(file: str | os.PathLike, path_in_home: str | None = None) -> dict[str, Any]:
    """``{"path", "content"}`` for a ``.ipynb`` file; OptionError naming it if it is not one."""
    path = Path(file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError(f"cannot read the notebook {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    try:
        content = json.loads(text)
    except ValueError as e:
        raise OptionError(f"{str(path)!r} is not a notebook (not JSON: {e})") from None
    if not (isinstance(content, dict) and isinstance(content.get("cells"), list) and "nbformat" in content):
        raise OptionError(f"{str(path)!r} is not a notebook (no nbformat cells)")
    return {"path": notebook_path_in_home(path, path_in_home), "content": content}


def service_url(hub_url: str) -> str:
    """The jobs service through the hub's proxy: ``<hub-url>services/jobs/``."""
    return clitools.service_url(hub_url, SERVICE)


def make_client(hub_url: str | None, token: str | None, environ: Mapping[str, str] | None = None,
                timeout: float = REQUEST_TIMEOUT) -> ServiceClient:
    """The client for the jobs service (see `hubforge.clitools.make_client`)."""
    return clitools.make_client(SERVICE, hub_url, token, environ, timeout)


# --- formatting -------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 04 min``; empty for None."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def run_duration(run: Mapping[str, Any], now: datetime | None = None) -> str:
    """The run's duration; for a running run, the time since it started (``12 s so far``)."""
    if run.get("duration") is not None:
        return format_duration(run["duration"])
    if run.get("status") == "running" and run.get("started_at"):
        try:
            started = datetime.fromisoformat(run["started_at"])
        except ValueError:
            return ""
        now = now or datetime.now(started.tzinfo)
        return format_duration(max((now - started).total_seconds(), 0.0)) + " so far"
    return ""


def format_trigger(trigger: Mapping[str, Any] | None) -> str:
    """``cron 0 6 * * * (UTC)``, ``once``, ``watch incoming/*.csv -> trigger_file``."""
    trigger = trigger or {}
    kind = trigger.get("type", "")
    if kind == "cron":
        return f"cron {trigger.get('cron', '')} ({trigger.get('timezone') or 'UTC'})"
    if kind == "watch":
        parameter = trigger.get("parameter")
        return f"watch {trigger.get('path', '')}" + (f" -> {parameter}" if parameter else "")
    return str(kind)


def format_progress(run: Mapping[str, Any]) -> str:
    progress = run.get("progress") or {}
    if progress.get("cells"):
        return f"{progress.get('cell') or 0}/{progress['cells']}"
    return ""


def jobs_table(jobs: Sequence[Mapping[str, Any]], owners: bool = False) -> str:
    headers = ["ID", *(["OWNER"] if owners else []), "NAME", "TRIGGER", "PROFILE", "STATE", "NEXT RUN", "LAST RUN"]
    rows = []
    for job in jobs:
        last = job.get("last_run") or {}
        rows.append([
            job.get("id", ""), *([job.get("owner", "")] if owners else []), job.get("name", ""),
            format_trigger(job.get("trigger")), job.get("profile") or "",
            "paused" if job.get("paused") else "active", local_time(job.get("next_run")),
            f"{last['id']} {last.get('status', '')}" if last.get("id") is not None else "",
        ])
    return table(headers, rows)


def runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
    headers = ["RUN", "JOB", "STATUS", "TRIGGER", "ATTEMPT", "STARTED", "DURATION", "CELLS", "REASON"]
    rows = [[
        run.get("id", ""), run.get("job_name") or run.get("job_id", ""), run.get("status", ""),
        run.get("trigger", ""), run.get("attempt", ""),
        local_time(run.get("started_at") or run.get("queued_at")), run_duration(run),
        format_progress(run), one_line(run.get("reason")),
    ] for run in runs]
    return table(headers, rows)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def job_details(job: Mapping[str, Any]) -> str:
    """``hubforge jobs show``: one field a line, then the notebook's parameters."""
    notify = job.get("notify") or {}
    retention = job.get("retention") or {}
    kept = [f"the last {retention['keep_runs']} runs" if retention.get("keep_runs") is not None else "",
            f"runs younger than {retention['keep_days']} days" if retention.get("keep_days") is not None else ""]
    last = job.get("last_run") or {}
    last_run = ""
    if last.get("id") is not None:
        when = local_time(last.get("finished_at") or last.get("started_at"))
        last_run = f"{last['id']} {last.get('status', '')} {when}".strip()
    fields = [
        ("id", job.get("id")),
        ("name", job.get("name")),
        ("owner", job.get("owner")),
        ("notebook", f"{job.get('notebook', '')}" + (f" ({job['kernel']})" if job.get("kernel") else "")),
        ("trigger", format_trigger(job.get("trigger"))),
        ("parameters", ", ".join(f"{k}={_value(v)}" for k, v in (job.get("parameters") or {}).items())),
        ("profile", job.get("profile")),
        ("timeout", format_duration(job["timeout"]) if job.get("timeout") is not None else ""),
        ("retries", f"{job.get('retries', 0)}" + (f", backoff {format_duration(job['retry_backoff'])}"
                                                  if job.get("retry_backoff") else "")),
        ("missed runs", job.get("missed")),
        ("notify", f"{notify['url']} on {', '.join(notify.get('on') or [])}" if notify.get("url") else ""),
        ("keep", " or ".join(k for k in kept if k) or "every run"),
        ("state", "paused" if job.get("paused") else "active"),
        ("next run", local_time(job.get("next_run"))),
        ("last run", last_run),
        ("created", local_time(job.get("created"))),
        ("updated", local_time(job.get("updated"))),
    ]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {'' if value is None else value}".rstrip() for name, value in fields]
    declared = job.get("notebook_parameters") or []
    if declared:
        lines += ["", "notebook parameters:", table(
            ["NAME", "TYPE", "DEFAULT", "HELP"],
            [[p.get("name", ""), p.get("type", ""), p.get("default", ""), one_line(p.get("help"))] for p in declared],
        )]
    return "\n".join(lines)


def run_summary(run: Mapping[str, Any]) -> str:
    """``run 17 (nightly-report) succeeded in 12 s`` / ``... failed after 3.1 s: <reason>``."""
    job = run.get("job_name") or run.get("job_id")
    text = f"run {run.get('id')} ({job}) {run.get('status')}"
    duration = run_duration(run)
    if duration:
        text += f" {'in' if run.get('status') == 'succeeded' else 'after'} {duration}"
    if run.get("reason"):
        text += f": {run['reason']}"
    return text


# --- talking to the service -------------------------------------------------------------


def _items(answer: Any, key: str) -> list[dict[str, Any]]:
    """The list in a ``{"<key>": [...]}`` answer (or a bare list)."""
    if isinstance(answer, list):
        return answer
    if isinstance(answer, dict) and isinstance(answer.get(key), list):
        return answer[key]
    raise CommandError(f"the jobs service sent an unexpected answer (no {key!r} list)", 502)


def job_id(client: ServiceClient, ref: str) -> int:
    """The id of the job ``ref`` names: a job of yours with that name, else an id."""
    jobs = _items(client.get("api/jobs"), "jobs")
    named = [job for job in jobs if job.get("name") == ref]
    if named:
        return int(named[0]["id"])
    if ref.isdigit():
        return int(ref)
    raise CommandError(f"you have no job named {ref!r} (hubforge jobs list shows your jobs)", 404)


def wait_for_run(client: ServiceClient, run_id: int, timeout: float | None = None,
                 interval: float | None = None) -> dict[str, Any]:
    """Poll run ``run_id`` every ``interval`` seconds (default `POLL_INTERVAL`) until it
    has finished and return it, with a progress bar of its cells on a terminal.
    CommandError after ``timeout`` seconds (the run goes on); the service's error when it
    cannot be reached ``POLL_FAILURES`` times in a row (fewer: it may be restarting)."""
    from tqdm import tqdm

    interval = POLL_INTERVAL if interval is None else interval
    deadline = None if timeout is None else time.monotonic() + timeout
    failures = 0
    seen = False  # a service that never answered is not restarting: fail at once
    # disable=None: a bar on a terminal only, so CI logs get the summary line alone.
    with tqdm(total=None, unit="cell", desc=f"run {run_id}", disable=None, file=sys.stderr) as bar:
        while True:
            try:
                run = client.get(f"api/runs/{run_id}")
                failures, seen = 0, True
            except ServiceError as e:
                failures += 1
                if not seen or e.status not in (502, 503, 504) or failures >= POLL_FAILURES:
                    raise
                run = None
            if run is not None:
                _show_progress(bar, run)
                if run.get("status") in FINAL_STATUSES:
                    return run
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                status = run.get("status") if run else "unknown"
                raise CommandError(f"run {run_id} is still {status} after {timeout:g} s; it goes on "
                                   f"(hubforge jobs wait {run_id}, or hubforge jobs cancel {run_id})")
            pause = interval * (2 ** min(failures, 4))
            time.sleep(pause if left is None else min(pause, left))


def _show_progress(bar: Any, run: Mapping[str, Any]) -> None:
    progress = run.get("progress") or {}
    cells = progress.get("cells") or None
    if cells and bar.total != cells:
        bar.total = cells
    bar.n = cells if (run.get("status") == "succeeded" and cells) else (progress.get("cell") or 0)
    bar.set_postfix_str(str(run.get("status", "")), refresh=False)
    bar.refresh()


# --- the commands -----------------------------------------------------------------------


def _options(args: argparse.Namespace) -> dict[str, Any]:
    values = vars(args).copy()
    values["parameters"] = parse_parameters(values.pop("parameter", None))
    return values


def cmd_list(client: ServiceClient, args: argparse.Namespace) -> int:
    """List your jobs (admins: everyone's with --all): trigger, state, next and last run."""
    answer = client.get("api/jobs", {"all": "1"} if args.all else None)
    jobs = _items(answer, "jobs")
    if args.json:
        print_json(answer)
    elif jobs:
        print(jobs_table(jobs, owners=args.all))
    else:
        print("no jobs" + ("" if args.all else " (hubforge jobs create NOTEBOOK.ipynb makes one)"))
    return 0


def cmd_show(client: ServiceClient, args: argparse.Namespace) -> int:
    """Show one job: its notebook, trigger, parameters, settings, next and last run."""
    job = client.get(f"api/jobs/{job_id(client, args.job)}")
    if args.json:
        print_json(job)
    else:
        print(job_details(job))
    return 0


def _print_job_change(args: argparse.Namespace, job: Mapping[str, Any], verb: str) -> None:
    if args.json:
        print_json(job)
        return
    text = f"{verb} job {job.get('id')} ({job.get('name')}): {format_trigger(job.get('trigger'))}"
    text += ", paused" if job.get("paused") else ""
    if job.get("next_run"):
        text += f", next run {local_time(job['next_run'])}"
    last = job.get("last_run") or {}
    if verb == "created" and last.get("id") is not None:
        text += f"; run {last['id']} {last.get('status', '')} (hubforge jobs wait {last['id']})"
    print(text)


def cmd_create(client: ServiceClient, args: argparse.Namespace) -> int:
    """Create a job from a notebook file. The service keeps a copy of the notebook: edit
    the file, then send it again with `hubforge jobs edit JOB --notebook FILE`. Without a
    trigger option the job runs once, now."""
    body = job_body(_options(args), notebook=read_notebook(args.notebook, args.path_in_home))
    _print_job_change(args, client.post("api/jobs", body), "created")
    return 0


def cmd_edit(client: ServiceClient, args: argparse.Namespace) -> int:
    """Change a job: only the options given change. -p changes the parameters it names and
    keeps the others; --timezone alone keeps the cron expression; --notebook sends a
    notebook file again."""
    if args.path_in_home and not args.notebook:
        raise OptionError("--path-in-home goes with --notebook")
    current = client.get(f"api/jobs/{job_id(client, args.job)}")
    notebook = read_notebook(args.notebook, args.path_in_home) if args.notebook else None
    body = job_body(_options(args), notebook=notebook, current=current)
    if not body:
        raise OptionError("nothing to change: give the options to change (hubforge jobs edit --help)")
    _print_job_change(args, client.patch(f"api/jobs/{current['id']}", body), "changed")
    return 0


def cmd_pause(client: ServiceClient, args: argparse.Namespace) -> int:
    """Stop a job's trigger from firing; runs under way go on."""
    _print_job_change(args, client.post(f"api/jobs/{job_id(client, args.job)}/pause"), "paused")
    return 0


def cmd_resume(client: ServiceClient, args: argparse.Namespace) -> int:
    """Let a paused job's trigger fire again."""
    _print_job_change(args, client.post(f"api/jobs/{job_id(client, args.job)}/resume"), "resumed")
    return 0


def cmd_delete(client: ServiceClient, args: argparse.Namespace) -> int:
    """Delete a job with its runs and their outputs; runs under way are cancelled."""
    job = client.get(f"api/jobs/{job_id(client, args.job)}")
    what = f"job {job['id']} ({job.get('name')})"
    if not args.yes and not confirm_delete(what, f"Delete {what} with its runs and outputs?"):
        return 1
    client.delete(f"api/jobs/{job['id']}")
    if args.json:
        print_json({"deleted": job["id"]})
    else:
        print(f"deleted job {job['id']} ({job.get('name')})")
    return 0


def _finished(args: argparse.Namespace, run: Mapping[str, Any]) -> int:
    if args.json:
        print_json(run)
    else:
        print(run_summary(run))
    return 0 if run.get("status") == "succeeded" else 1


def cmd_run(client: ServiceClient, args: argparse.Namespace) -> int:
    """Start one run of a job now; -p values override the job's for this run. With --wait,
    wait for it as `hubforge jobs wait` does."""
    body = run_body(parse_parameters(args.parameter))
    run = client.post(f"api/jobs/{job_id(client, args.job)}/runs", body)
    if args.wait:
        if not args.json:
            print(f"run {run['id']} {run.get('status', '')}", file=sys.stderr)
        return _finished(args, wait_for_run(client, int(run["id"])))
    if args.json:
        print_json(run)
    else:
        print(f"run {run['id']} {run.get('status', '')} (hubforge jobs wait {run['id']})")
    return 0


def cmd_runs(client: ServiceClient, args: argparse.Namespace) -> int:
    """List runs, newest first: all of yours, or one job's."""
    params = {"limit": str(args.limit)}
    if args.job is not None:
        params["job"] = str(job_id(client, args.job))
    if args.status:
        params["status"] = args.status
    answer = client.get("api/runs", params)
    runs = _items(answer, "runs")
    if args.json:
        print_json(answer)
    elif runs:
        print(runs_table(runs))
    else:
        print("no runs")
    return 0


def cmd_cancel(client: ServiceClient, args: argparse.Namespace) -> int:
    """Cancel a queued or running run (a finished run answers 409)."""
    run = client.post(f"api/runs/{args.run}/cancel")
    if args.json:
        print_json(run)
    else:
        print(f"run {run.get('id', args.run)} {run.get('status', '')}")
    return 0


def cmd_wait(client: ServiceClient, args: argparse.Namespace) -> int:
    """Wait until a run has finished, with a progress bar of its cells on a terminal.
    Exits with 0 if it succeeded, 1 if it failed, timed out or was cancelled (or is still
    going after --timeout)."""
    return _finished(args, wait_for_run(client, args.run, timeout=args.timeout))


def cmd_output(client: ServiceClient, args: argparse.Namespace) -> int:
    """Get a run's output notebook (404 until the run has one): to a file with -o, else
    to stdout."""
    content = client.get_bytes(f"api/runs/{args.run}/output")
    if args.output:
        path = Path(args.output).expanduser()
        try:
            path.write_bytes(content)
        except OSError as e:
            raise CommandError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
        print(f"saved the output notebook of run {args.run} to {path}", file=sys.stderr)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
    return 0


def cmd_log(client: ServiceClient, args: argparse.Namespace) -> int:
    """Print a run's log: its attempts, the kernel's start, the failing cell's error."""
    text = client.get_bytes(f"api/runs/{args.run}/log").decode("utf-8", "replace")
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_openapi(client: ServiceClient, args: argparse.Namespace) -> int:
    """Print the service's REST API description (OpenAPI 3.1, JSON)."""
    print_json(client.get("api/openapi.json"))
    return 0


# --- the parser -------------------------------------------------------------------------


def _job_options(parser: argparse.ArgumentParser, edit: bool) -> None:
    parser.add_argument("--name", help="the job's name, unique among your jobs"
                        + ("" if edit else " (default: the notebook's file name without .ipynb)"))
    triggers = parser.add_argument_group("trigger (one of)")
    exclusive = triggers.add_mutually_exclusive_group()
    exclusive.add_argument("--cron", metavar="EXPR", help='run on a cron schedule, e.g. "0 6 * * 1-5"')
    exclusive.add_argument("--once", action="store_true", help="run once, now" + ("" if edit else " (the default)"))
    exclusive.add_argument("--watch", metavar="GLOB",
                           help="run once per new file matching GLOB under your home, e.g. 'incoming/*.csv'")
    triggers.add_argument("--timezone", metavar="TZ", help="the cron schedule's IANA timezone (default UTC)")
    triggers.add_argument("--watch-parameter", metavar="NAME",
                          help="the notebook parameter that gets the new file's path (relative to your home)")
    parser.add_argument("-p", "--parameter", action="append", type=parse_parameter, metavar="NAME=VALUE",
                        help="a value for the notebook's parameters cell, read as a Python literal "
                             "(0.5, True, [1, 2], 'text'), else as text; repeatable"
                             + ("; the parameters not named keep their values" if edit else ""))
    parser.add_argument("--profile", metavar="SLUG", help="the spawner profile the runs use (default: your default)")
    parser.add_argument("--timeout", type=clitools.count(1), metavar="SECONDS",
                        help="seconds a run may take, kernel start included (default and maximum: the service's)")
    parser.add_argument("--retries", type=clitools.count(0), metavar="N", help="extra attempts after a failure or timeout")
    parser.add_argument("--retry-backoff", type=clitools.count(0), metavar="SECONDS",
                        help="seconds before the first retry, doubling for each next one")
    parser.add_argument("--missed", choices=MISSED,
                        help="runs missed while the service was down: run_once (the default) or skip")
    parser.add_argument("--notify-url", metavar="URL", help="a webhook that gets a POST of each run that ends")
    parser.add_argument("--notify-on", type=parse_notify_on, metavar="EVENTS",
                        help="when to call the webhook: failure, success or failure,success (default failure)")
    parser.add_argument("--keep-runs", type=clitools.count(1), metavar="N", help="keep the last N runs and their outputs")
    parser.add_argument("--keep-days", type=clitools.count(1), metavar="DAYS", help="keep runs younger than DAYS days")
    parser.add_argument("--paused", action="store_true",
                        help=f"pause the job{'' if edit else ' from the start'} (hubforge jobs resume starts it)")
    parser.add_argument("--path-in-home", metavar="PATH",
                        help="the notebook's path relative to your home, as the job names it "
                             "(default: the file's path under your home, else its name)")


def add_jobs_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``jobs`` and its commands to ``hubforge``'s subparsers; returns the ``jobs`` parser."""
    group = clitools.CommandGroup(
        subparsers, "jobs", connect=make_client,
        help="scheduled notebooks: create, list, run, wait for and fetch jobs",
        description="Scheduled notebook jobs, through the hub's jobs service (see docs/jobs.md). "
                    "JOB is a job's name or id; RUN is a run's id.",
    )
    command = group.add

    p = command("list", cmd_list, "list your jobs")
    p.add_argument("--all", action="store_true", help="everyone's jobs (admins)")

    p = command("show", cmd_show, "show one job")
    p.add_argument("job", metavar="JOB", help="job name or id")

    p = command("create", cmd_create, "create a job from a notebook file")
    p.add_argument("notebook", metavar="NOTEBOOK.ipynb", help="the notebook file to run")
    _job_options(p, edit=False)

    p = command("edit", cmd_edit, "change a job")
    p.add_argument("job", metavar="JOB", help="job name or id")
    p.add_argument("--notebook", metavar="FILE", help="send this notebook file as the job's notebook")
    _job_options(p, edit=True)

    for name, func, text in (("pause", cmd_pause, "pause a job's trigger"),
                             ("resume", cmd_resume, "resume a paused job")):
        p = command(name, func, text)
        p.add_argument("job", metavar="JOB", help="job name or id")

    p = command("delete", cmd_delete, "delete a job, its runs and outputs")
    p.add_argument("job", metavar="JOB", help="job name or id")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    p = command("run", cmd_run, "run a job now")
    p.add_argument("job", metavar="JOB", help="job name or id")
    p.add_argument("-p", "--parameter", action="append", type=parse_parameter, metavar="NAME=VALUE",
                   help="a parameter value for this run only (as in create); repeatable")
    p.add_argument("--wait", action="store_true", help="wait for the run; exit 0 only if it succeeds")

    p = command("runs", cmd_runs, "list runs")
    p.add_argument("job", metavar="JOB", nargs="?", help="only this job's runs (name or id)")
    p.add_argument("--status", choices=STATUSES, help="only runs with this status")
    p.add_argument("--limit", type=clitools.count(1), default=50, metavar="N", help="at most N runs (default 50)")

    p = command("cancel", cmd_cancel, "cancel a queued or running run")
    p.add_argument("run", metavar="RUN", type=clitools.count(1), help="run id")

    p = command("wait", cmd_wait, "wait for a run to finish")
    p.add_argument("run", metavar="RUN", type=clitools.count(1), help="run id")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="give up after this long (default: never)")

    p = command("output", cmd_output, "get a run's output notebook")
    p.add_argument("run", metavar="RUN", type=clitools.count(1), help="run id")
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE (default: stdout)")

    p = command("log", cmd_log, "print a run's log")
    p.add_argument("run", metavar="RUN", type=clitools.count(1), help="run id")

    command("openapi", cmd_openapi, "print the REST API description (OpenAPI)")
    return group.parser
