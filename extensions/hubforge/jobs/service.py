"""The ``jobs`` hub service: scheduled notebooks, their REST API and the Jobs page.

The hub starts it (see :mod:`hubforge.jobs.hubconfig`) as ``python -m hubforge.jobs``
(see ``__main__.py`` for why) with its settings in ``HUBFORGE_JOBS_CONFIG`` (JSON). At start
it upgrades its database (Alembic), starts the executor's forkserver and the scheduler
(:mod:`hubforge.jobs.scheduler`), and serves the API documented in docs/jobs.md under
``/services/jobs/``. Scopes: ``custom:hubforge:jobs:read`` and
``custom:hubforge:jobs:write`` (which implies read). A user sees only their own jobs and
runs; anything else answers 404, exactly as if it did not exist. Admins see all
(``?all=1`` on the lists) and may act on all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import posixpath
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from tornado import web
from traitlets import Unicode, default

from ..exceptions import OptionsError, UserInputError
from ..services.auth import APIHandler, StatefulServiceApp, requires_scopes
from .db import FINAL_STATUSES, Job, Run, make_engine, naive, sessions, upgrade, utcnow
from .errors import InvalidJob, JobConflict
from .models import job_json, run_json
from .notebooks import check_parameters, inspect
from .settings import JobsSettings, check_retention
from .triggers import CronTrigger, OnceTrigger, WatchTrigger, parse_trigger

READ_SCOPE = "custom:hubforge:jobs:read"
WRITE_SCOPE = "custom:hubforge:jobs:write"
JOB_FIELDS = {"name", "notebook", "trigger", "parameters", "profile", "timeout", "retries", "retry_backoff",
              "missed", "notify", "retention", "paused"}

log = logging.getLogger("hubforge.jobs")


class JobsHandlerMixin:
    """What every jobs handler shares: the caller, their jobs and runs."""

    @property
    def scheduler(self):
        try:
            return self.settings["scheduler"]
        except KeyError:  # listening already, still opening the database (see JobsService)
            raise web.HTTPError(503, "the jobs service is starting; try again in a few seconds") from None

    @property
    def jobs(self) -> JobsSettings:
        return self.settings["jobs_settings"]

    def caller(self) -> tuple[str, bool]:
        user = self.current_user
        if user["kind"] != "user":
            raise web.HTTPError(403, "only hub users have jobs")
        return user["name"], bool(user.get("admin"))

    def find_job(self, s, job_id: str) -> Job:
        self.log_context["job"] = job_id
        name, admin = self.caller()
        job = s.get(Job, int(job_id))
        if job is None or (job.owner != name and not admin):
            raise web.HTTPError(404, f"job {job_id} does not exist")
        return job

    def find_run(self, s, run_id: str) -> Run:
        self.log_context["run"] = run_id
        name, admin = self.caller()
        run = s.get(Run, int(run_id))
        if run is None or (run.owner != name and not admin):
            raise web.HTTPError(404, f"run {run_id} does not exist")
        return run

    def all_users(self) -> bool:
        """``?all=1``: everyone's (admins only; 403 for others)."""
        if self.get_argument("all", "") not in ("1", "true", "yes"):
            return False
        if not self.caller()[1]:
            raise web.HTTPError(403, "only admins may list every user's jobs (?all=1)")
        return True

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, UserInputError):  # InvalidJob, JobConflict, OptionsError
            self.set_status(exc.status_code)
            kwargs["exc_info"] = (web.HTTPError, web.HTTPError(exc.status_code, "%s", str(exc) if isinstance(exc, OptionsError) else exc.message), None)
            status_code = exc.status_code
        super().write_error(status_code, **kwargs)


class JobListHandler(JobsHandlerMixin, APIHandler):
    @requires_scopes(READ_SCOPE)
    def get(self):
        name, _ = self.caller()
        with self.scheduler.sessions() as s:
            query = select(Job).options(defer(Job.notebook)).order_by(Job.id)
            if not self.all_users():
                query = query.where(Job.owner == name)
            jobs = s.scalars(query).all()
            last = _last_runs(s, [j.id for j in jobs])
            self.write_json({"jobs": [job_json(j, last_run=last.get(j.id)) for j in jobs]})

    @requires_scopes(WRITE_SCOPE)
    def post(self):
        name, _ = self.caller()
        data = self.body()
        groups = self.current_user.get("groups") or []
        fields = self.settings["validator"](data, name, groups, existing=None)
        with self.scheduler.sessions() as s:
            from sqlalchemy import func

            count = s.scalar(select(func.count(Job.id)).where(Job.owner == name))
            if count >= self.jobs.max_jobs_per_user:
                raise JobConflict(f"you have {count} jobs, the most a user may have (jobs.max_jobs_per_user); "
                                  "delete one first")
            job = Job(owner=name, **fields)
            s.add(job)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise JobConflict(f"name: you already have a job named {fields['name']!r}; choose another name or edit that job") from None
            if isinstance(parse_trigger(job.trigger), OnceTrigger) and not job.paused:
                self.scheduler.queue_run(job.id, "once", key=f"once:{job.id}")
            self.scheduler.poke()
            s.refresh(job)
            self.log_context["job"] = str(job.id)
            self.set_header("Location", f"api/jobs/{job.id}")
            self.write_json(job_json(job, last_run=_last_runs(s, [job.id]).get(job.id)), status=201)


class JobHandler(JobsHandlerMixin, APIHandler):
    @requires_scopes(READ_SCOPE)
    def get(self, job_id):
        with self.scheduler.sessions() as s:
            job = self.find_job(s, job_id)
            self.write_json(job_json(job, last_run=_last_runs(s, [job.id]).get(job.id)))

    @requires_scopes(WRITE_SCOPE)
    def patch(self, job_id):
        data = self.body()
        with self.scheduler.sessions() as s:
            job = self.find_job(s, job_id)
            groups = self.current_user.get("groups") or [] if job.owner == self.caller()[0] else None
            fields = self.settings["validator"](data, job.owner, groups, existing=job)
            for key, value in fields.items():
                setattr(job, key, value)
            trigger = parse_trigger(job.trigger)
            if fields.get("paused") is False and isinstance(trigger, CronTrigger):
                # Unpaused: from now on, not the times missed while paused.
                from datetime import UTC, datetime

                job.next_run_at = naive(trigger.next_after(datetime.now(UTC)))
            job.updated = utcnow()
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise JobConflict(f"name: there is already a job named {fields.get('name')!r}") from None
            self.scheduler.poke()
            self.write_json(job_json(job, last_run=_last_runs(s, [job.id]).get(job.id)))

    @requires_scopes(WRITE_SCOPE)
    def delete(self, job_id):
        with self.scheduler.sessions() as s:
            job = self.find_job(s, job_id)
            run_ids = list(s.scalars(select(Run.id).where(Run.job_id == job.id)))
            s.delete(job)
            s.commit()
        self.scheduler.forget_job(int(job_id), run_ids)
        self.set_status(204)
        self.finish()


class JobActionHandler(JobsHandlerMixin, APIHandler):
    """``POST api/jobs/<id>/pause`` and ``.../resume``."""

    @requires_scopes(WRITE_SCOPE)
    def post(self, job_id, action):
        with self.scheduler.sessions() as s:
            job = self.find_job(s, job_id)
            job.paused = action == "pause"
            trigger = parse_trigger(job.trigger)
            if action == "resume" and isinstance(trigger, CronTrigger):
                from datetime import UTC, datetime

                job.next_run_at = naive(trigger.next_after(datetime.now(UTC)))
            job.updated = utcnow()
            s.commit()
            self.scheduler.poke()
            self.write_json(job_json(job, last_run=_last_runs(s, [job.id]).get(job.id)))


class JobRunsHandler(JobsHandlerMixin, APIHandler):
    """``GET api/jobs/<id>/runs``; ``POST`` runs the job now."""

    @requires_scopes(READ_SCOPE)
    def get(self, job_id):
        with self.scheduler.sessions() as s:
            job = self.find_job(s, job_id)
            runs = s.scalars(select(Run).where(Run.job_id == job.id).order_by(Run.id.desc()).limit(_limit(self))).all()
            self.write_json({"runs": [run_json(r) for r in runs]})

    @requires_scopes(WRITE_SCOPE)
    def post(self, job_id):
        data = self.body()
        with self.scheduler.sessions() as s:
            job = self.find_job(s, job_id)
            notebook = inspect(job.notebook)
            trigger = parse_trigger(job.trigger)
            extra = (trigger.parameter,) if isinstance(trigger, WatchTrigger) else ()
            parameters = check_parameters(data.get("parameters"), notebook, extra=extra)
            for key in data:
                if key != "parameters":
                    raise InvalidJob(key, "unknown field; a run takes only 'parameters'")
        run = self.scheduler.queue_run(int(job_id), "manual", parameters=parameters)
        with self.scheduler.sessions() as s:
            run = s.get(Run, run.id)
            self.log_context["run"] = str(run.id)
            self.write_json(run_json(run), status=201)


class RunListHandler(JobsHandlerMixin, APIHandler):
    @requires_scopes(READ_SCOPE)
    def get(self):
        name, _ = self.caller()
        query = select(Run).order_by(Run.id.desc()).limit(_limit(self))
        if not self.all_users():
            query = query.where(Run.owner == name)
        job = self.get_argument("job", "")
        if job:
            if not job.isdigit() or len(job) > 15:
                raise InvalidJob("job", f"must be a job id (a number), got {job!r}")
            query = query.where(Run.job_id == int(job))
        status = self.get_argument("status", "")
        if status:
            from .db import STATUSES

            if status not in STATUSES:
                raise InvalidJob("status", f"unknown status {status!r}; one of {', '.join(STATUSES)}")
            query = query.where(Run.status == status)
        with self.scheduler.sessions() as s:
            self.write_json({"runs": [run_json(r) for r in s.scalars(query).all()]})


class RunHandler(JobsHandlerMixin, APIHandler):
    @requires_scopes(READ_SCOPE)
    def get(self, run_id):
        with self.scheduler.sessions() as s:
            self.write_json(run_json(self.find_run(s, run_id)))


class RunCancelHandler(JobsHandlerMixin, APIHandler):
    @requires_scopes(WRITE_SCOPE)
    async def post(self, run_id):
        with self.scheduler.sessions() as s:
            run = self.find_run(s, run_id)
            status = run.status
        if status in FINAL_STATUSES or not self.scheduler.cancel(int(run_id), self.caller()[0]):
            raise JobConflict(f"run {run_id} has finished ({status}); there is nothing to cancel")
        for _ in range(100):  # answer with the run as cancelled, once the runner is gone
            with self.scheduler.sessions() as s:
                run = s.get(Run, int(run_id))
                if run is None or run.status in FINAL_STATUSES:
                    break
            await asyncio.sleep(0.05)
        with self.scheduler.sessions() as s:
            self.write_json(run_json(self.find_run(s, run_id)))


class RunOutputHandler(JobsHandlerMixin, APIHandler):
    """``GET api/runs/<id>/output`` (ipynb), ``output.html`` (rendered, sandboxed), ``log``."""

    @requires_scopes(READ_SCOPE)
    async def get(self, run_id, what):
        with self.scheduler.sessions() as s:
            run = self.find_run(s, run_id)
            job_name = run.job.name
        if what == "log":
            path = self.scheduler.log_path(int(run_id))
            data = _tail(path, None if self.get_argument("full", "") == "1" else LOG_TAIL)
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.set_header("Cache-Control", "no-store")
            self.set_header("X-Content-Type-Options", "nosniff")
            self.set_header("Content-Security-Policy", "sandbox")
            self.finish(data)
            return
        path = self.scheduler.output_path(int(run_id))
        if not path.exists():
            raise web.HTTPError(404, f"run {run_id} has no output notebook (yet)")
        if what == "output.html":
            from .render import render_notebook_html

            html = await asyncio.to_thread(lambda: render_notebook_html(json.loads(path.read_bytes())))
            # Outputs are the user's: no script runs and the page gets an origin of its own.
            self.set_header("Content-Security-Policy", "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:")
            self.set_header("X-Content-Type-Options", "nosniff")
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            self.finish(html)
            return
        self.set_header("Content-Type", "application/x-ipynb+json")
        self.set_header("Content-Disposition", f'attachment; filename="{_safe_filename(job_name)}-run-{run_id}.ipynb"')
        self.finish(path.read_bytes())


class InspectHandler(JobsHandlerMixin, APIHandler):
    """``POST api/inspect``: a notebook's kernel and typed parameters."""

    @requires_scopes(READ_SCOPE)
    def post(self):
        data = self.body()
        notebook = data.get("notebook")
        if not isinstance(notebook, dict) or "content" not in notebook:
            raise InvalidJob("notebook", 'must be {"path": ..., "content": <the notebook JSON>}')
        found = inspect(notebook["content"], self.settings["kernels"], max_bytes=_max_bytes(self.jobs))
        self.write_json({"kernel": found.kernel, "language": found.language,
                         "parameters": [p.to_json() for p in found.parameters]})


class ProfilesHandler(JobsHandlerMixin, APIHandler):
    @requires_scopes(READ_SCOPE)
    def get(self):
        name, _ = self.caller()
        profile_set = self.settings["profile_set"]
        groups = self.current_user.get("groups") or []
        default = profile_set.default_for(name, groups)
        self.write_json({"profiles": [
            {"slug": p.slug, "display_name": p.display_name, "description": p.description,
             "default": default is not None and p.slug == default.slug}
            for p in profile_set.for_user(name, groups)
        ]})


class OpenAPIHandler(web.RequestHandler):
    """``GET api/openapi.json``: the API description; public, like any API reference."""

    def get(self):
        from .openapi import openapi_document

        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(openapi_document(self.settings["jobs_prefix"])))


#: The end of a run's log that ``GET api/runs/<id>/log`` answers with (``?full=1``: all).
LOG_TAIL = 2**20


def _tail(path: Path, limit: int | None) -> bytes:
    """The last `limit` bytes of a file (all of it with None), marked when cut."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if limit is None or size <= limit:
                f.seek(0)
                return f.read()
            f.seek(size - limit)
            return b"[... the first %d bytes are left out; ?full=1 for all ...]\n" % (size - limit) + f.read()
    except FileNotFoundError:
        return b""


def _last_runs(s, job_ids: list[int]) -> dict[int, Run]:
    if not job_ids:
        return {}
    from sqlalchemy import func

    newest = select(func.max(Run.id)).where(Run.job_id.in_(job_ids)).group_by(Run.job_id)
    return {r.job_id: r for r in s.scalars(select(Run).where(Run.id.in_(newest)))}


def _limit(handler) -> int:
    raw = handler.get_argument("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidJob("limit", f"must be a whole number from 1 to 1000, got {raw!r}")
    return int(raw)


def _max_bytes(jobs: JobsSettings) -> int:
    return int(jobs.max_notebook_mb * 2**20)


def _safe_filename(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:100] or "job"


class JobValidator:
    """Turns a job request body into validated column values (see docs/jobs.md)."""

    def __init__(self, jobs: JobsSettings, profile_set, kernels: set[str], *, watch_available: bool):
        self.jobs = jobs
        self.profile_set = profile_set
        self.kernels = kernels
        self.watch_available = watch_available

    def __call__(self, data: dict, owner: str, groups, existing: Job | None) -> dict:
        from datetime import UTC, datetime

        from ..profiles.resolve import resolve

        for key in data:
            if key not in JOB_FIELDS:
                raise InvalidJob(key, f"unknown field; a job's fields: {', '.join(sorted(JOB_FIELDS))}")
        fields: dict = {}
        creating = existing is None
        if creating and "notebook" not in data:
            raise InvalidJob("notebook", 'required: {"path": "reports/x.ipynb", "content": <the notebook JSON>}')
        if "notebook" in data:
            nb = data["notebook"]
            if not isinstance(nb, dict) or "content" not in nb:
                raise InvalidJob("notebook", 'must be {"path": "reports/x.ipynb", "content": <the notebook JSON>}')
            path = nb.get("path") or "notebook.ipynb"
            if not isinstance(path, str) or posixpath.isabs(path) or ".." in path.split("/") or not path.endswith(".ipynb"):
                raise InvalidJob("notebook.path", f"must be a relative path inside your home ending in .ipynb, got {path!r}")
            found = inspect(nb["content"], self.kernels, max_bytes=_max_bytes(self.jobs))
            fields.update(notebook_path=posixpath.normpath(path), notebook=found.content, kernel=found.kernel,
                          notebook_parameters=[p.to_json() for p in found.parameters])
        else:
            found = inspect(existing.notebook)
        if creating or "name" in data:
            name = data.get("name") or posixpath.splitext(posixpath.basename(fields.get("notebook_path", "job")))[0]
            if not isinstance(name, str) or not name.strip() or len(name) > 100 or any(ch in name for ch in "/\\\n\r\t"):
                raise InvalidJob("name", f"must be 1 to 100 characters without slashes or line breaks, got {name!r}")
            fields["name"] = name.strip()
        if creating or "trigger" in data:
            trigger = parse_trigger(data.get("trigger"))
            if isinstance(trigger, WatchTrigger) and not self.watch_available:
                raise InvalidJob("trigger.type", "watch triggers need mode local or containers (the service reads your home there)")
            fields["trigger"] = trigger.to_json()
            fields["next_run_at"] = naive(trigger.next_after(datetime.now(UTC))) if isinstance(trigger, CronTrigger) else None
            fields["watch_state"] = None
        trigger = parse_trigger(fields.get("trigger", existing.trigger if existing else None))
        if creating or "parameters" in data or "notebook" in data:
            extra = (trigger.parameter,) if isinstance(trigger, WatchTrigger) else ()
            fields["parameters"] = check_parameters(data.get("parameters", existing.parameters if existing else None), found, extra=extra)
        if creating or "profile" in data:
            if groups is None:  # an admin editing someone's job: the profile must be one the owner had
                profile = self.profile_set.get(data.get("profile"))
                if profile is None:
                    raise InvalidJob("profile", f"unknown profile {data.get('profile')!r}")
                fields["profile"] = profile.slug
            else:
                try:
                    fields["profile"] = resolve(self.profile_set, {"profile": data.get("profile") or None}, owner, groups).slug
                except OptionsError as e:
                    raise InvalidJob("profile", e.message) from None
        if creating or "timeout" in data:
            fields["timeout"] = _number(data.get("timeout"), "timeout", self.jobs.default_timeout, 1, self.jobs.max_timeout, int)
        if creating or "retries" in data:
            fields["retries"] = _number(data.get("retries"), "retries", 0, 0, self.jobs.max_retries, int)
        if creating or "retry_backoff" in data:
            fields["retry_backoff"] = _number(data.get("retry_backoff"), "retry_backoff", 30.0, 0, 86400, float)
        if creating or "missed" in data:
            missed = data.get("missed") or self.jobs.missed
            if missed not in ("run_once", "skip"):
                raise InvalidJob("missed", f"must be 'run_once' or 'skip', got {missed!r}")
            fields["missed"] = missed
        if creating or "notify" in data:
            fields["notify"] = _notify(data.get("notify"))
        if creating or "retention" in data:
            fields["retention"] = check_retention(data.get("retention") or {}, "retention")
        if creating or "paused" in data:
            paused = data.get("paused", False)
            if not isinstance(paused, bool):
                raise InvalidJob("paused", f"must be true or false, got {paused!r}")
            fields["paused"] = paused
        return fields


def _number(value, field: str, default, low, high, kind):
    if value is None:
        return default
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or (kind is int and value != int(value))):
        raise InvalidJob(field, f"must be a {'whole ' if kind is int else ''}number, got {value!r}")
    if not low <= value <= high:
        raise InvalidJob(field, f"must be from {low} to {high}, got {value!r}")
    return kind(value)


def _notify(value):
    if value in (None, {}):
        return None
    if not isinstance(value, dict):  # not echoed: a webhook URL often holds a token
        raise InvalidJob("notify", 'must be {"url": "https://...", "on": ["failure"]}')
    for key in value:
        if key not in ("url", "on"):
            raise InvalidJob(f"notify.{key}", "unknown field; use url and on")
    url = value.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidJob("notify.url", "must be an http:// or https:// URL")
    on = value.get("on", ["failure"])
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, list) or not on or any(item not in ("failure", "success") for item in on):
        raise InvalidJob("notify.on", f"must be a list of 'failure' and/or 'success', got {value.get('on')!r}")
    return {"url": url, "on": sorted(set(on))}


class JobsService(StatefulServiceApp):
    """The jobs hub service (``python -m hubforge.jobs.service``)."""

    name = "hubforge-jobs"
    description = "HubForge's scheduled notebook jobs service (run by the hub)."
    # Set by the hub configuration (hubconfig.py) on Kubernetes.
    bind_env = "HUBFORGE_JOBS_BIND"
    secret_env = ("HUBFORGE_JOBS_DB_URL",)

    config_json = Unicode(help="The service's configuration (JSON); default $HUBFORGE_JOBS_CONFIG.").tag(config=True)

    @default("config_json")
    def _default_config_json(self):
        return os.environ.get("HUBFORGE_JOBS_CONFIG", "{}")

    def handlers(self) -> list[tuple]:
        from .kubernetes import RunnerReportHandler
        from .page import JobsPage

        return [
            (r"", JobsPage),
            (r"api/jobs", JobListHandler),
            (r"api/jobs/(\d{1,15})", JobHandler),
            (r"api/jobs/(\d{1,15})/(pause|resume)", JobActionHandler),
            (r"api/jobs/(\d{1,15})/runs", JobRunsHandler),
            (r"api/runs", RunListHandler),
            (r"api/runs/(\d{1,15})", RunHandler),
            (r"api/runs/(\d{1,15})/cancel", RunCancelHandler),
            (r"api/runs/(\d{1,15})/(output|output\.html|log)", RunOutputHandler),
            (r"api/inspect", InspectHandler),
            (r"api/profiles", ProfilesHandler),
            (r"api/openapi.json", OpenAPIHandler),
            (r"api/runner/(\d{1,15})", RunnerReportHandler),
        ]

    def web_settings(self) -> dict:
        return {"jobs_prefix": self.service_prefix}

    def setup(self) -> None:
        """Read the configuration, open and upgrade the database, make the scheduler."""
        from jupyter_client.kernelspec import KernelSpecManager

        from ..profiles import load_profiles
        from ..profiles.resolve import resolve
        from .executors import ContainerExecutor, LocalExecutor
        from .scheduler import Scheduler

        config = json.loads(self.config_json)
        jobs = JobsSettings(**config.get("settings", {}))
        jobs_dir = Path(config["jobs_dir"])
        jobs_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(jobs_dir, 0o700)
        db_url = os.environ.get("HUBFORGE_JOBS_DB_URL") or jobs.db_url or f"sqlite:///{jobs_dir / 'jobs.sqlite'}"
        from ..services.auth import redact_in_logs
        from sqlalchemy.engine import make_url

        password = make_url(db_url).password
        if password:
            redact_in_logs([password])
        engine = make_engine(db_url)
        upgrade(engine)
        profile_set = load_profiles(config["profiles"])

        def profile_for(owner: str, slug: str):
            profile = profile_set.get(slug)
            groups = profile.allowed_groups or () if profile is not None else ()
            users_ok = profile is not None and (profile.allowed_users is None or owner in profile.allowed_users)
            return resolve(profile_set, {"profile": slug}, owner if users_ok else owner, groups)

        mode = config.get("mode", "local")
        if mode == "containers":
            executor = ContainerExecutor(jobs_dir, **config.get("containers", {}))
        elif mode == "kubernetes":
            from .kubernetes import KubernetesExecutor

            jobs.warm_kernels = False  # a run is a pod: nothing to keep warm
            executor = KubernetesExecutor(jobs_dir, profile_paths=config["profiles"], **config.get("kubernetes", {}))
            self._app.settings["remote_executor"] = executor
        else:
            executor = LocalExecutor(jobs_dir, **config.get("local", {}))
        self.scheduler = Scheduler(sessions(engine), executor, jobs, jobs_dir, profile_for)
        # Kernels are checked where runs execute like this service (local); a profile's
        # image (containers, Kubernetes) is trusted to have the notebook's kernel.
        kernels = set(KernelSpecManager().find_kernel_specs()) if mode == "local" else None
        self._app.settings.update({
            "jobs_settings": jobs, "profile_set": profile_set, "kernels": kernels,
            "validator": JobValidator(jobs, profile_set, kernels, watch_available=mode in ("local", "containers")),
        })

    async def start_work(self) -> None:
        """Start the runners' forkserver and the scheduler (after listening: see
        `StatefulServiceApp`)."""
        warm = getattr(self.scheduler.executor, "warm", None)
        if warm is not None:
            warm()  # in the main thread: the forkserver dies with the thread that started it
        await self.scheduler.start()
        self._app.settings["scheduler"] = self.scheduler
        self._forget_secrets()

    async def stop_work(self) -> None:
        log.info("jobs service stopping: runs in progress are stopped and will be recovered at the next start")
        if hasattr(self, "scheduler"):
            await self.scheduler.stop()


def main(argv=None) -> None:
    JobsService.launch_instance(argv)
