"""Scheduled notebook jobs from Python: the notebook side of the hub's ``jobs`` service.

Every function is one call (or a few) to the service's REST API (docs/jobs.md) with the
server's hub token, through `hubforge.client.ServiceClient`::

    import hubforge.jobs as jobs

    job = jobs.schedule(cron="0 6 * * 1-5", timezone="Europe/Paris",   # this notebook
                        parameters={"alpha": 0.5}, profile="cpu-small", retries=2)
    run = jobs.run_now(job["id"])             # or jobs.run_now("nightly-report")
    run = jobs.wait(run["id"])                # a progress bar of cells in a notebook
    jobs.output(run["id"])                    # 'job-outputs/nightly-report/run-17.ipynb'
    jobs.pause("nightly-report"); jobs.resume("nightly-report")
    jobs.update("nightly-report", retries=3, notebook=True)   # re-upload the notebook

A job keeps the copy of the notebook it was given: save the notebook before scheduling
it (the file on disk is what is sent), and send it again with ``update(job,
notebook=True)`` after editing. Jobs are named by id or by name wherever a function takes
``job``.

Failures the service reports raise `JobsError` (a `hubforge.client.ServiceError`:
``.status`` and ``.message``, the service's own text: 400 names the bad field, 404 an
absent job or run, 409 a conflict). Arguments that cannot make a request (two triggers,
a notebook that is not there or not a notebook) raise `ValueError` or
`FileNotFoundError` naming the argument, before anything is sent.

`job_request` and `update_request` build the request bodies without a service, for the
tests and for tools that want to see what would be sent.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..client import ServiceClient, ServiceError

__all__ = [
    "JobsError", "schedule", "inspect", "list_jobs", "get_job", "update", "pause", "resume",
    "delete", "run_now", "runs", "get_run", "cancel", "wait", "output", "log", "profiles",
]

#: The hub service's name.
SERVICE = "jobs"
#: Seconds one request may take. Creating a job uploads the notebook, and the service
#: checks its parameters and profile before it answers.
REQUEST_TIMEOUT = 30.0
#: Run statuses after which nothing changes.
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
#: Where `output` saves a run's notebook by default, under the working directory.
OUTPUT_DIR = "job-outputs"

_TRIGGER_ARGUMENTS = "cron=, once=True or watch="


class JobsError(ServiceError):
    """The jobs service refused a request or could not be reached.

    ``status`` is the HTTP status (400 bad input, naming the field; 404 no such job or
    run, or not yours; 409 a conflict; 502/504 the service is unreachable or slow) and
    ``message`` the text to show.
    """

    def __init__(self, status: int, message: str):
        super().__init__(SERVICE, status, message)


# --- the connection ------------------------------------------------------------------

#: One client per hub URL and token: the service's URL is looked up once per client.
_CLIENTS: dict[tuple[str, str], ServiceClient] = {}


def _client() -> ServiceClient:
    # Keyed on the environment so that a kernel (or a test) that changes user gets a
    # client for the new one.
    key = (os.environ.get("JUPYTERHUB_API_URL", ""), os.environ.get("JUPYTERHUB_API_TOKEN", ""))
    client = _CLIENTS.get(key)
    if client is None:
        client = _CLIENTS[key] = ServiceClient(SERVICE, timeout=REQUEST_TIMEOUT)
    return client


def _call(method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None,
          raw: bool = False) -> Any:
    """One request; a `ServiceError` becomes a `JobsError` with the same status and message."""
    query = {k: str(v) for k, v in (params or {}).items() if v is not None}
    try:
        return _client().request(method, path, body, params=query or None, raw=raw)
    except ServiceError as e:
        raise JobsError(e.status, e.message) from None


def _items(answer: Any, key: str) -> list[dict[str, Any]]:
    """The list in a ``{"<key>": [...]}`` answer."""
    if isinstance(answer, dict) and isinstance(answer.get(key), list):
        return answer[key]
    raise JobsError(502, f"the jobs service sent an unexpected answer (no {key!r} list)")


# --- notebooks -----------------------------------------------------------------------


def server_root() -> Path:
    """The directory notebook paths are relative to: the server's root, ``$HOME``."""
    return Path(os.path.expanduser("~")).resolve()


def current_notebook() -> Path | None:
    """The file of the notebook this kernel runs, or None outside a notebook.

    jupyter-server tells the kernel in ``JPY_SESSION_NAME``, which ipykernel also puts
    in the user namespace as ``__session__``: an absolute path, or one relative to the
    server's root.
    """
    session = None
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        session = shell.user_ns.get("__session__")
    session = session or os.environ.get("JPY_SESSION_NAME")
    if not session or not isinstance(session, str):
        return None
    path = Path(session)
    return path if path.is_absolute() else server_root() / path


def notebook_path(notebook: str | os.PathLike | None = None) -> Path:
    """The notebook file `notebook` names (relative to the working directory), or this
    kernel's notebook when None. Raises ValueError or FileNotFoundError naming it."""
    if notebook is None:
        path = current_notebook()
        if path is None:
            raise ValueError(
                "notebook: not given, and this kernel does not know which notebook it runs "
                "(JPY_SESSION_NAME is not set); pass notebook='path/to/notebook.ipynb'"
            )
    else:
        path = Path(notebook).expanduser()
    path = path.resolve()
    if path.suffix != ".ipynb":
        raise ValueError(f"notebook: {str(path)!r} is not a notebook (expected a .ipynb file)")
    if not path.is_file():
        raise FileNotFoundError(f"notebook: no notebook file at {str(path)!r}")
    return path


def relative_path(path: str | os.PathLike) -> str:
    """`path` relative to the server's root, as the service and JupyterLab name files.

    A notebook outside the root (in /tmp, say) is named by its file name: the service
    keeps its own copy, and the name only labels the job.
    """
    try:
        return Path(path).resolve().relative_to(server_root()).as_posix()
    except ValueError:
        return Path(path).name


def read_notebook(notebook: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"path": <relative to the server's root>, "content": <the notebook's JSON>}``."""
    path = notebook_path(notebook)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"notebook: {str(path)!r} is not a notebook (not UTF-8 text: {e})") from None
    except ValueError as e:
        raise ValueError(f"notebook: {str(path)!r} is not a notebook (not JSON: {e})") from None
    if not (isinstance(content, dict) and isinstance(content.get("cells"), list) and "nbformat" in content):
        raise ValueError(f"notebook: {str(path)!r} is not a notebook (no nbformat cells)")
    return {"path": relative_path(path), "content": content}


# --- request bodies ------------------------------------------------------------------


def _trigger(cron: str | None, once: bool | None, watch: str | None, timezone: str | None,
             watch_parameter: str | None) -> dict[str, Any] | None:
    """The ``trigger`` field for the trigger arguments given, or None for none given."""
    given = [name for name, value in (("cron", cron), ("once", once), ("watch", watch)) if value]
    if len(given) > 1:
        raise ValueError(f"give one of {_TRIGGER_ARGUMENTS}, not several: {' and '.join(given)}")
    if timezone is not None and not cron:
        raise ValueError("timezone: only a cron schedule has a timezone (give cron= too)")
    if watch_parameter is not None and not watch:
        raise ValueError("watch_parameter: only a watch trigger passes a file (give watch= too)")
    if cron:
        trigger: dict[str, Any] = {"type": "cron", "cron": str(cron)}
        if timezone is not None:
            trigger["timezone"] = str(timezone)
        return trigger
    if watch:
        return {"type": "watch", "path": str(watch), "parameter": watch_parameter or "trigger_file"}
    if once:
        return {"type": "once"}
    return None


def _parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(parameters, Mapping):
        raise ValueError(f"parameters: expected a dict of name: value, got {type(parameters).__name__}")
    out = {}
    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"parameters: {name!r} is not a parameter name")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"parameters: {name}={value!r} cannot be sent (use numbers, text, booleans, "
                "None, or lists and dicts of them)") from None
        out[name] = value
    return out


def _notify_on(notify_on: str | Iterable[str]) -> list[str]:
    return [notify_on] if isinstance(notify_on, str) else list(notify_on)


def _options(**fields: Any) -> dict[str, Any]:
    """The fields that map one to one onto the body, when given."""
    return {name: value for name, value in fields.items() if value is not None}


def job_request(notebook: Mapping[str, Any], *, name: str | None = None, cron: str | None = None,
                timezone: str | None = None, once: bool = False, watch: str | None = None,
                watch_parameter: str = "trigger_file", parameters: Mapping[str, Any] | None = None,
                profile: str | None = None, timeout: float | None = None, retries: int | None = None,
                retry_backoff: float | None = None, missed: str | None = None,
                notify_url: str | None = None, notify_on: str | Iterable[str] | None = None,
                keep_runs: int | None = None, keep_days: float | None = None,
                paused: bool = False) -> dict[str, Any]:
    """The body of ``POST api/jobs`` for `schedule`'s arguments (see it); `notebook` is
    ``{"path", "content"}`` as `read_notebook` gives it. Fields left None are left out,
    so the service's defaults apply."""
    trigger = _trigger(cron, once, watch, timezone,
                       watch_parameter if watch_parameter != "trigger_file" else None)
    if notify_on is not None and not notify_url:
        raise ValueError("notify_on: give notify_url too (the webhook to call)")
    body: dict[str, Any] = {"notebook": dict(notebook)}
    if name is not None:
        body["name"] = name
    body["trigger"] = trigger or {"type": "once"}
    if parameters:
        body["parameters"] = _parameters(parameters)
    body.update(_options(profile=profile, timeout=timeout, retries=retries,
                         retry_backoff=retry_backoff, missed=missed))
    if notify_url:
        body["notify"] = {"url": notify_url,
                          "on": _notify_on(notify_on) if notify_on is not None else ["failure"]}
    retention = _options(keep_runs=keep_runs, keep_days=keep_days)
    if retention:
        body["retention"] = retention
    if paused:
        body["paused"] = True
    return body


def update_request(current: Mapping[str, Any], *, notebook: Mapping[str, Any] | None = None,
                   name: str | None = None, cron: str | None = None, timezone: str | None = None,
                   once: bool | None = None, watch: str | None = None,
                   watch_parameter: str | None = None, parameters: Mapping[str, Any] | None = None,
                   profile: str | None = None, timeout: float | None = None,
                   retries: int | None = None, retry_backoff: float | None = None,
                   missed: str | None = None, notify_url: str | None = None,
                   notify_on: str | Iterable[str] | None = None, keep_runs: int | None = None,
                   keep_days: float | None = None, paused: bool | None = None) -> dict[str, Any]:
    """The body of ``PATCH api/jobs/<id>`` that changes the job `current` as asked.

    Only what is given changes. A part of a field completes the job's current value: a
    timezone alone keeps the cron expression, ``notify_on`` alone keeps the webhook URL,
    ``keep_days`` alone keeps ``keep_runs``.
    """
    body: dict[str, Any] = {}
    if notebook is not None:
        body["notebook"] = dict(notebook)
    if name is not None:
        body["name"] = name
    trigger = current.get("trigger") or {}
    if cron or once or watch:
        body["trigger"] = _trigger(cron, once, watch, timezone, watch_parameter)
    elif timezone is not None or watch_parameter is not None:
        # A part of the trigger: the rest is the job's current one.
        if timezone is not None and trigger.get("type") != "cron":
            raise ValueError("timezone: this job has no cron schedule (give cron= too)")
        if watch_parameter is not None and trigger.get("type") != "watch":
            raise ValueError("watch_parameter: this job does not watch files (give watch= too)")
        body["trigger"] = {**trigger, **_options(timezone=timezone, parameter=watch_parameter)}
    if parameters is not None:
        body["parameters"] = _parameters(parameters)
    body.update(_options(profile=profile, timeout=timeout, retries=retries,
                         retry_backoff=retry_backoff, missed=missed, paused=paused))
    if notify_url is not None or notify_on is not None:
        notify = dict(current.get("notify") or {})
        url = notify_url or notify.get("url")
        if not url:
            raise ValueError("notify_on: this job has no webhook; give notify_url too")
        on = _notify_on(notify_on) if notify_on is not None else notify.get("on") or ["failure"]
        body["notify"] = {"url": url, "on": on}
    retention = _options(keep_runs=keep_runs, keep_days=keep_days)
    if retention:
        body["retention"] = {**(current.get("retention") or {}), **retention}
    if not body:
        raise ValueError("update: nothing to change (give the fields to change as keywords)")
    return body


# --- jobs ----------------------------------------------------------------------------


def schedule(notebook: str | os.PathLike | None = None, *, name: str | None = None,
             cron: str | None = None, timezone: str | None = None, once: bool = False,
             watch: str | None = None, watch_parameter: str = "trigger_file",
             parameters: Mapping[str, Any] | None = None, profile: str | None = None,
             timeout: float | None = None, retries: int | None = None,
             retry_backoff: float | None = None, missed: str | None = None,
             notify_url: str | None = None, notify_on: str | Iterable[str] | None = None,
             keep_runs: int | None = None, keep_days: float | None = None,
             paused: bool = False) -> dict[str, Any]:
    """Create a job that runs `notebook` and return it (a dict; ``job["id"]``).

    `notebook` is a ``.ipynb`` file (relative to the working directory); default the
    notebook this kernel runs, as last saved. The service keeps a copy: edits made later
    reach the job through ``update(job, notebook=True)``.

    The trigger is one of: `cron`, a cron expression (``"0 6 * * 1-5"``) read in
    `timezone` (an IANA name, default UTC); `once` (the default): one run now; `watch`, a
    glob under your home (``"incoming/*.csv"``): a run per new matching file, whose path
    (relative to your home) is passed in the `watch_parameter` parameter.

    `parameters` override the notebook's ``parameters`` cell; each value must have the
    type of its default there (the service refuses others with status 400 naming the
    parameter). `profile` is the spawner profile the runs use (default: your default).
    `timeout` is in seconds per run, kernel start included. `retries` extra attempts
    follow a failure, the n-th after ``retry_backoff * 2**(n-1)`` seconds. `missed` is
    ``"run_once"`` or ``"skip"``: what to do with runs due while the service was down.
    `notify_url` is a webhook that gets each run as JSON when it ends as `notify_on` says
    (``"failure"``, the default, and/or ``"success"``). `keep_runs` and `keep_days` bound
    the runs (and outputs) kept. `paused` creates the job paused.
    """
    # The arguments are checked first: they cost nothing, and reading the notebook may fail.
    body = job_request({}, name=name, cron=cron, timezone=timezone,
                       once=once, watch=watch, watch_parameter=watch_parameter,
                       parameters=parameters, profile=profile, timeout=timeout, retries=retries,
                       retry_backoff=retry_backoff, missed=missed, notify_url=notify_url,
                       notify_on=notify_on, keep_runs=keep_runs, keep_days=keep_days,
                       paused=paused)
    body["notebook"] = read_notebook(notebook)
    return _call("POST", "api/jobs", body)


def inspect(notebook: str | os.PathLike | None = None) -> dict[str, Any]:
    """What the service reads in `notebook` (default: this one): its kernel and its typed
    parameters (``[{"name", "type", "default", "help"}]``)."""
    return _call("POST", "api/inspect", {"notebook": read_notebook(notebook)})


def list_jobs(all_users: bool = False) -> list[dict[str, Any]]:
    """Your jobs (admins: everyone's with `all_users`)."""
    return _items(_call("GET", "api/jobs", params={"all": 1} if all_users else None), "jobs")


def _job_id(job: int | str | Mapping[str, Any]) -> int:
    """The id of `job`: an id, a job dict, or a name (looked up among your jobs)."""
    if isinstance(job, Mapping):
        return int(job["id"])
    if isinstance(job, bool) or not isinstance(job, (int, str)):
        raise ValueError(f"job: expected a job id or name, got {job!r}")
    if isinstance(job, int):
        return job
    named = [j for j in list_jobs() if j.get("name") == job]
    if named:
        return int(named[0]["id"])
    if job.isdigit():  # "42" from a command line, and no job is named so
        return int(job)
    raise JobsError(404, f"you have no job named {job!r}")


def _run_id(run: int | str | Mapping[str, Any]) -> int:
    if isinstance(run, Mapping):
        return int(run["id"])
    if isinstance(run, bool):
        raise ValueError(f"run: expected a run id, got {run!r}")
    try:
        return int(run)
    except (TypeError, ValueError):
        raise ValueError(f"run: expected a run id (a number), got {run!r}") from None


def get_job(job: int | str) -> dict[str, Any]:
    """One job, by id or name."""
    return _call("GET", f"api/jobs/{_job_id(job)}")


def update(job: int | str, *, notebook: bool | str | os.PathLike | None = None,
           name: str | None = None, cron: str | None = None, timezone: str | None = None,
           once: bool | None = None, watch: str | None = None, watch_parameter: str | None = None,
           parameters: Mapping[str, Any] | None = None, profile: str | None = None,
           timeout: float | None = None, retries: int | None = None,
           retry_backoff: float | None = None, missed: str | None = None,
           notify_url: str | None = None, notify_on: str | Iterable[str] | None = None,
           keep_runs: int | None = None, keep_days: float | None = None,
           paused: bool | None = None) -> dict[str, Any]:
    """Change a job (by id or name); the fields are `schedule`'s. Returns the job.

    ``notebook=True`` sends the job's notebook file again (its path relative to your
    home); a path sends that notebook instead.
    """
    current = get_job(job)
    if notebook is True:
        notebook_ref = read_notebook(server_root() / current["notebook"])
    elif notebook is None or notebook is False:
        notebook_ref = None
    else:
        notebook_ref = read_notebook(notebook)
    body = update_request(current, notebook=notebook_ref, name=name, cron=cron,
                          timezone=timezone, once=once, watch=watch,
                          watch_parameter=watch_parameter, parameters=parameters,
                          profile=profile, timeout=timeout, retries=retries,
                          retry_backoff=retry_backoff, missed=missed, notify_url=notify_url,
                          notify_on=notify_on, keep_runs=keep_runs, keep_days=keep_days,
                          paused=paused)
    return _call("PATCH", f"api/jobs/{current['id']}", body)


def pause(job: int | str) -> dict[str, Any]:
    """Stop a job's trigger from firing (runs under way go on). Returns the job."""
    return _call("POST", f"api/jobs/{_job_id(job)}/pause")


def resume(job: int | str) -> dict[str, Any]:
    """Let a paused job's trigger fire again. Returns the job."""
    return _call("POST", f"api/jobs/{_job_id(job)}/resume")


def delete(job: int | str) -> None:
    """Delete a job with its runs and outputs; runs under way are cancelled."""
    _call("DELETE", f"api/jobs/{_job_id(job)}")


def run_now(job: int | str, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Start one run of a job now; `parameters` override the job's for this run.
    Returns the run (``run["id"]``, for `wait` and `output`)."""
    body = {"parameters": _parameters(parameters)} if parameters else {}
    return _call("POST", f"api/jobs/{_job_id(job)}/runs", body)


# --- runs ----------------------------------------------------------------------------


def runs(job: int | str | None = None, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Your runs, newest first: of one `job` (id or name), with one `status`, at most `limit`."""
    params = {"job": None if job is None else _job_id(job), "status": status, "limit": int(limit)}
    return _items(_call("GET", "api/runs", params=params), "runs")


def get_run(run_id: int) -> dict[str, Any]:
    """One run, with its ``status`` and ``progress`` (``{"cell", "cells"}``)."""
    return _call("GET", f"api/runs/{_run_id(run_id)}")


def cancel(run_id: int) -> dict[str, Any]:
    """Cancel a queued or running run (409 if it has finished). Returns the run."""
    return _call("POST", f"api/runs/{_run_id(run_id)}/cancel")


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


def wait(run_id: int, timeout: float | None = None, poll: float = 0.5,
         progress: bool | None = None) -> dict[str, Any]:
    """Wait until a run has finished (succeeded, failed, timed out or was cancelled) and
    return it; a failure is in ``run["status"]`` and ``run["reason"]``, not raised.

    `timeout` (seconds, default none) raises `TimeoutError` and leaves the run going.
    `poll` is the seconds between two looks. `progress` shows a bar of the cells run
    (default: in a notebook only).
    """
    run_id = _run_id(run_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = None
    try:
        while True:
            run = get_run(run_id)
            if progress or (progress is None and _in_notebook()):
                bar = _show_progress(bar, run)
            if run.get("status") in FINAL_STATUSES:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"run {run_id} is still {run.get('status')} after {timeout:g} s; it goes on "
                    f"(wait({run_id}) again, or cancel({run_id}))")
            time.sleep(poll)
    finally:
        if bar is not None:
            bar.close()


def _show_progress(bar: Any, run: dict[str, Any]) -> Any:
    """Create or move the progress bar (tqdm's notebook widget in a notebook)."""
    from tqdm.auto import tqdm

    done = run.get("progress") or {}
    cells = done.get("cells") or None
    if bar is None:
        # No rate: cells take as long as they take, and their pace says nothing.
        bar = tqdm(total=cells, unit="cell", desc=f"run {run['id']}", leave=True,
                   bar_format="{desc}: {bar} cell {n_fmt} of {total_fmt} [{elapsed}{postfix}]")
    if cells and bar.total != cells:
        bar.total = cells
    bar.n = done.get("cell") or 0
    if run.get("status") == "succeeded" and cells:
        bar.n = cells
    bar.set_postfix_str(str(run.get("status", "")), refresh=False)
    bar.refresh()
    return bar


def _safe_name(name: str) -> str:
    """A job name as one harmless path component."""
    safe = re.sub(r"[^\w.-]+", "_", name).lstrip(".")
    return safe or "job"


def default_output_path(run: Mapping[str, Any]) -> str:
    """Where `output` saves `run`'s notebook by default:
    ``job-outputs/<job name>/run-<id>.ipynb``, relative to the working directory."""
    job = _safe_name(str(run.get("job_name") or run.get("job_id")))
    return str(Path(OUTPUT_DIR) / job / f"run-{run['id']}.ipynb")


def output(run_id: int, path: str | os.PathLike | None = None, *, overwrite: bool = False) -> str:
    """Save a run's output notebook and return the path it was saved at.

    Default `path`: ``job-outputs/<job name>/run-<id>.ipynb`` under the working
    directory. An existing file is kept (FileExistsError) unless `overwrite`. A run that
    has no output yet answers 404.
    """
    run = get_run(run_id)
    path = Path(default_output_path(run) if path is None else path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"path: {str(path)!r} exists; pass overwrite=True to replace it")
    content = _call("GET", f"api/runs/{run['id']}/output", raw=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb" if overwrite else "xb") as f:
        f.write(content)
    return str(path)


def log(run_id: int) -> str:
    """A run's log: the attempts, kernel start, the failing cell's error."""
    return _call("GET", f"api/runs/{_run_id(run_id)}/log", raw=True).decode("utf-8", "replace")


def profiles() -> list[dict[str, Any]]:
    """The spawner profiles you may run jobs with."""
    return _items(_call("GET", "api/profiles"), "profiles")
