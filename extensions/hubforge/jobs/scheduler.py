"""The jobs service's engine: fire triggers, queue runs, execute them, keep history.

`Scheduler` owns the database sessions, an executor and the warm runners. One
background loop (`loop`) does, on every tick (at most `TICK` seconds apart, and exactly
at the next cron time when that comes first):

1. renew the **lease**; a copy of the service that does not hold it does nothing else,
   and a copy that takes it over first recovers what the previous holder left
   (`recover`): runs left *running* are failed ("the jobs service stopped during the
   run") or retried per their job, and cron runs missed while nobody held the lease
   follow each job's ``missed`` policy;
2. **fire** due cron jobs (a run each, keyed so it can never be inserted twice) and move
   their next time on; warm a runner for jobs due within ``prewarm_seconds``;
3. **dispatch** queued runs, oldest first, within the global and per-user concurrency
   limits; each becomes a task (`_execute`) that takes a warm runner (or starts one),
   sends it the run, follows its progress, and enforces the timeout and cancellation.

Watch triggers are checked by their own loop every ``watch_interval`` seconds.
A finished run's output notebook and log are files in the service's data directory;
the run row records status, times, reason and progress. Then retries are queued
(with jittered exponential backoff), the webhook is notified, and retention applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
import uuid
from collections import defaultdict
from datetime import UTC, timedelta
from pathlib import Path

from sqlalchemy import Text, func, select, type_coerce
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer

from ..profiles.resolve import ResolvedProfile
from .db import FINAL_STATUSES, Job, Run, naive, release_lease, take_lease, utcnow
from .executors import Executor, Slot
from .settings import JobsSettings
from .triggers import CronTrigger, WatchTrigger, parse_trigger

log = logging.getLogger("hubforge.jobs")

#: Longest sleep of the scheduler loop, seconds.
TICK = 0.5
LEASE = "scheduler"


class Scheduler:
    """Runs jobs: see the module doc. `profile_for(owner, slug)` resolves a profile."""

    def __init__(self, sessions, executor: Executor, settings: JobsSettings, jobs_dir: Path, profile_for):
        self.sessions = sessions
        self.executor = executor
        self.settings = settings
        self.jobs_dir = jobs_dir
        self.runs_dir = jobs_dir / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.runs_dir, 0o700)
        self.profile_for = profile_for
        self.instance = uuid.uuid4().hex[:12]
        self.holding = False
        self.running: dict[int, asyncio.Task] = {}
        self.cancels: dict[int, asyncio.Event] = {}
        self.warm: dict[tuple, list[asyncio.Task]] = defaultdict(list)
        self.snapshots: dict[int, dict] = {}
        self.wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.notify_tasks: set[asyncio.Task] = set()

    # --- paths --------------------------------------------------------------------

    def output_path(self, run_id: int) -> Path:
        return self.runs_dir / f"{run_id}.ipynb"

    def log_path(self, run_id: int) -> Path:
        return self.runs_dir / f"{run_id}.log"

    # --- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.executor.sweep()
        self._tasks = [asyncio.create_task(self.loop(), name="jobs-scheduler"),
                       asyncio.create_task(self.watch_loop(), name="jobs-watch")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self.running.values()):
            task.cancel()
        for tasks in self.warm.values():
            for task in tasks:
                task.cancel()
        await asyncio.gather(*self._tasks, *self.running.values(), *(t for ts in self.warm.values() for t in ts),
                             return_exceptions=True)
        await self._kill_warm()
        await self.executor.aclose()
        if self.holding:
            with self.sessions() as s:
                release_lease(s, LEASE, self.instance)

    def poke(self) -> None:
        """Wake the loop now (a job was created, a run queued or cancelled); from any thread."""
        loop = getattr(self, "_loop", None)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(self.wakeup.set)
        else:
            self.wakeup.set()

    async def loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler tick failed; trying again")
            delay = TICK
            with contextlib.suppress(Exception):
                delay = self.seconds_to_next_fire()
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), delay)

    def seconds_to_next_fire(self) -> float:
        with self.sessions() as s:
            nxt = s.scalar(select(func.min(Job.next_run_at)).where(Job.paused.is_(False)))
        if nxt is None:
            return TICK
        return max(0.0, min(TICK, (nxt - utcnow()).total_seconds()))

    async def tick(self) -> None:
        with self.sessions() as s:
            holding = take_lease(s, LEASE, self.instance, self.settings.lease_seconds)
        if holding and not self.holding:
            log.info("jobs scheduler %s holds the lease", self.instance)
            self.holding = True
            await self.recover()
        elif not holding:
            if self.holding:
                # Another copy holds it now and recovers (fails or retries) the runs this
                # copy had running: stop them here, so none runs twice.
                log.warning("jobs scheduler %s lost the lease; stopping its %d runs", self.instance, len(self.running))
                for event in list(self.cancels.values()):
                    event.by = "the jobs service (another copy took over the schedule)"
                    event.set()
            self.holding = False
            return
        self.fire_due()
        self.prewarm()
        self.dispatch()

    # --- recovery after a restart ---------------------------------------------------

    async def recover(self) -> None:
        """Runs another process left running, and cron runs missed while none held the lease."""
        now = utcnow()
        with self.sessions() as s:
            stale = s.scalars(select(Run).where(Run.status == "running")).all()
            for run in stale:
                if run.id in self.running:
                    continue
                log.warning("run %s: the jobs service stopped during the run", run.id)
                self._finish(s, run, "failed", "the jobs service stopped during the run")
                self._maybe_retry(s, run)
            for job in s.scalars(select(Job).where(Job.next_run_at.is_not(None)).where(Job.next_run_at < now - timedelta(seconds=2))):
                trigger = parse_trigger(job.trigger)
                if not isinstance(trigger, CronTrigger):
                    continue
                missed_at = job.next_run_at
                job.next_run_at = naive(trigger.next_after(now.replace(tzinfo=UTC)))
                if job.missed == "run_once" and not job.paused:
                    self._queue(s, job, "missed", key=f"cron:{job.id}:{missed_at.isoformat()}", scheduled_for=missed_at)
                    log.info("job %s: queued one run for the schedule missed at %s", job.id, missed_at)
            s.commit()

    # --- firing ---------------------------------------------------------------------

    def fire_due(self) -> None:
        now = utcnow()
        with self.sessions() as s:
            due = s.scalars(select(Job).where(Job.paused.is_(False)).where(Job.next_run_at.is_not(None))
                            .where(Job.next_run_at <= now)).all()
            for job in due:
                trigger = parse_trigger(job.trigger)
                job_id, when = job.id, job.next_run_at
                following = naive(trigger.next_after(max(when, now).replace(tzinfo=UTC))) if isinstance(trigger, CronTrigger) else None
                job.next_run_at = following
                self._queue(s, job, "cron", key=f"cron:{job_id}:{when.isoformat()}", scheduled_for=when)
                try:
                    s.commit()
                except IntegrityError:  # this firing exists (another copy made it): move on
                    s.rollback()
                    job = s.get(Job, job_id)
                    job.next_run_at = following
                    s.commit()

    def _queue(self, s, job: Job, trigger: str, *, key: str | None = None, scheduled_for=None,
               parameters: dict | None = None, attempt: int = 1, not_before=None, retry_of: int | None = None) -> Run:
        params = dict(job.parameters or {})
        params.update(parameters or {})
        run = Run(job_id=job.id, owner=job.owner, attempt=attempt, trigger=trigger, trigger_key=key,
                  status="queued", parameters=params, scheduled_for=scheduled_for or utcnow(),
                  queued_at=utcnow(), not_before=not_before, retry_of=retry_of, reason="")
        s.add(run)
        self.poke()
        return run

    def queue_run(self, job_id: int, trigger: str, parameters: dict | None = None, key: str | None = None) -> Run:
        """Queue a run of a job now (API: run now, once). Returns the run (committed)."""
        with self.sessions() as s:
            job = s.get(Job, job_id)
            run = self._queue(s, job, trigger, parameters=parameters, key=key)
            s.commit()
            s.refresh(run)
            return run

    # --- warm runners ---------------------------------------------------------------

    def prewarm(self) -> None:
        """Warm a runner for each cron job due within ``prewarm_seconds``."""
        if not self.settings.warm_kernels:
            return
        soon = utcnow() + timedelta(seconds=self.settings.prewarm_seconds)
        with self.sessions() as s:
            jobs = s.scalars(select(Job).where(Job.paused.is_(False)).where(Job.next_run_at.is_not(None))
                             .where(Job.next_run_at <= soon)).all()
            wanted = {(j.owner, j.profile, j.kernel) for j in jobs}
        for key in wanted:
            if not self.warm.get(key):
                self._warm_up(key)

    def _top_up(self, key: tuple) -> None:
        """Keep ``warm_runners`` (at most the per-user limit + 1) warm runners for `key`."""
        if not self.settings.warm_kernels:
            return
        wanted = min(self.settings.warm_runners, self.settings.max_concurrent_runs_per_user + 1)
        while len(self.warm.get(key, [])) < wanted:
            before = len(self.warm.get(key, []))
            self._warm_up(key)
            if len(self.warm.get(key, [])) == before:  # the profile failed to resolve
                return

    def _warm_up(self, key: tuple) -> None:
        owner, profile_slug, kernel = key
        try:
            profile = self.profile_for(owner, profile_slug)
        except Exception as e:
            log.warning("cannot warm a runner for %s (profile %s): %s", owner, profile_slug, e)
            return
        task = asyncio.create_task(self._start_ready(owner, profile, kernel), name=f"warm {key}")
        self.warm[key].append(task)
        loop = asyncio.get_running_loop()
        task.expire = loop.call_later(self.settings.warm_idle_seconds, self._expire, key, task)

    def _expire(self, key: tuple, task: asyncio.Task) -> None:
        if task in self.warm.get(key, []):
            self.warm[key].remove(task)
            asyncio.create_task(self._discard(task))

    async def _discard(self, task: asyncio.Task) -> None:
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            slot = await task
            await slot.kill()
            with contextlib.suppress(OSError):
                slot.log_path.unlink()

    async def _kill_warm(self) -> None:
        for key in list(self.warm):
            for task in self.warm.pop(key):
                await self._discard(task)

    async def _start_ready(self, owner: str, profile: ResolvedProfile, kernel: str) -> Slot:
        slot = await self.executor.start_slot(owner, profile, kernel)
        try:
            await slot.wait_ready(120)
        except BaseException as e:
            await slot.kill()
            e.log_path = slot.log_path  # what the runner said, for the run's log
            raise
        return slot

    async def take_slot(self, owner: str, profile: ResolvedProfile, kernel: str, timeout: float) -> Slot:
        """A ready runner for this user, profile and kernel: a warm one, else a new one.

        Starts the next warm runner for the same key right away (when enabled)."""
        key = (owner, profile.slug, kernel)
        slot = None
        while self.warm.get(key):
            task = self.warm[key].pop(0)
            with contextlib.suppress(AttributeError):
                task.expire.cancel()
            try:
                slot = await asyncio.wait_for(asyncio.shield(task), timeout)
                break
            except asyncio.CancelledError:  # the run was cancelled while the runner started
                asyncio.get_running_loop().create_task(self._discard(task))
                raise
            except (Exception, TimeoutError) as e:
                log.warning("a warm runner for %s failed: %s", owner, e)
                await self._discard(task)
                slot = None
        self._top_up(key)
        if slot is None:
            deadline = time.monotonic() + timeout
            try:
                slot = await asyncio.wait_for(self._start_ready(owner, profile, kernel), timeout)
            except RuntimeError as e:  # the runner died starting: once more, then give up
                log.warning("a runner for %s failed to start (%s); starting another", owner, e)
                slot = await asyncio.wait_for(self._start_ready(owner, profile, kernel),
                                              max(0.1, deadline - time.monotonic()))
        return slot

    # --- dispatch -------------------------------------------------------------------

    def dispatch(self) -> None:
        limit, per_user = self.settings.concurrency, self.settings.max_concurrent_runs_per_user
        if len(self.running) >= limit:
            return
        now = utcnow()
        busy: dict[str, int] = defaultdict(int)
        with self.sessions() as s:
            for owner in s.scalars(select(Run.owner).where(Run.id.in_(list(self.running)))):
                busy[owner] += 1
            full = [owner for owner, count in busy.items() if count >= per_user]
            # Users at their limit are left out in SQL: one user's backlog of thousands of
            # runs must not hide everyone else's behind it.
            queued = s.scalars(select(Run).where(Run.status == "queued").where(Run.owner.not_in(full))
                               .where((Run.not_before.is_(None)) | (Run.not_before <= now))
                               .order_by(Run.queued_at, Run.id).limit(200)).all()
            for run in queued:
                if len(self.running) >= limit:
                    break
                if busy[run.owner] >= per_user:
                    continue
                run.status = "running"
                run.started_at = utcnow()
                run.instance = self.instance
                s.commit()
                busy[run.owner] += 1
                self.cancels[run.id] = asyncio.Event()
                self.running[run.id] = asyncio.create_task(self._execute(run.id), name=f"run {run.id}")

    async def _execute(self, run_id: int) -> None:
        slot: Slot | None = None
        try:
            with self.sessions() as s:
                run = s.get(Run, run_id)
                job = run.job
                owner, kernel, profile_slug = job.owner, job.kernel, job.profile
                notebook, parameters, timeout = job.notebook, dict(run.parameters or {}), job.timeout
                notebook_path, trigger = job.notebook_path, parse_trigger(job.trigger)
            deadline = time.monotonic() + timeout
            cancel = self.cancels[run_id]
            try:
                profile = self.profile_for(owner, profile_slug)
                slot = await self._until(self.take_slot(owner, profile, kernel, timeout), deadline, cancel)
            except Exception as e:
                start_log = getattr(e, "log_path", None)
                if start_log is not None and start_log.exists():
                    os.replace(start_log, self.log_path(run_id))
                self.complete(run_id, *self._interrupted(e, cancel, timeout, f"could not start the run's kernel: {e}"))
                return
            if slot.log_path.exists():
                os.replace(slot.log_path, self.log_path(run_id))
            slot.log_path = self.log_path(run_id)
            cwd = self._cwd(notebook_path, owner)
            env = {"HUBFORGE_JOB_ID": str(job.id), "HUBFORGE_RUN_ID": str(run_id)}
            if isinstance(trigger, WatchTrigger) and trigger.parameter in parameters:
                env["HUBFORGE_TRIGGER_FILE"] = str(parameters[trigger.parameter])
            command = {"command": "run", "run_id": run_id, "notebook": notebook, "parameters": parameters,
                       "cwd": cwd, "env": env, "input_path": notebook_path, "timeout": timeout,
                       "output_path": f"jobs/runs/{run_id}.ipynb"}

            async def send_and_follow():
                await slot.send(command)  # may block on a stopped runner: inside the deadline
                return await self._follow(run_id, slot)

            try:
                done = await self._until(send_and_follow(), deadline, cancel)
            except Exception as e:
                status, reason = self._interrupted(e, cancel, timeout, f"the runner failed: {e}")
                self.complete(run_id, status, reason, self._banner(self.snapshots.get(run_id), reason))
                return
            if done is None:
                reason = "the run's process ended without a result (out of memory?); see the log"
                self.complete(run_id, "failed", reason, self._banner(self.snapshots.get(run_id), reason))
                return
            self.complete(run_id, done["status"], done.get("reason", ""), done.get("notebook"))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("run %s failed in the service", run_id)
            self.complete(run_id, "failed", f"internal error in the jobs service: {type(e).__name__}")
        finally:
            self.snapshots.pop(run_id, None)
            self.cancels.pop(run_id, None)
            self.running.pop(run_id, None)
            if slot is not None:
                await slot.kill()
            self.poke()

    @staticmethod
    async def _until(coro, deadline: float, cancel: asyncio.Event):
        """Await `coro` until the deadline (TimeoutError) or a cancel (CancelledRun)."""
        task = asyncio.ensure_future(coro)
        waiter = asyncio.ensure_future(cancel.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            task.cancel()
            with contextlib.suppress(BaseException):
                result = await task
                if isinstance(result, Slot):
                    await result.kill()
            if waiter in done:
                raise CancelledRun()
            raise TimeoutError()
        finally:
            waiter.cancel()

    def _interrupted(self, error: Exception, cancel: asyncio.Event, timeout: int, otherwise: str) -> tuple[str, str]:
        if isinstance(error, CancelledRun):
            return "cancelled", f"cancelled by {getattr(cancel, 'by', 'a user')}"
        if isinstance(error, TimeoutError):
            return "timed_out", f"timed out after {timeout} s"
        return "failed", otherwise

    async def _follow(self, run_id: int, slot: Slot) -> dict | None:
        while True:
            message = await slot.receive()
            if message is None or message.get("event") == "done":
                return message
            if message.get("event") == "progress":
                with self.sessions() as s:
                    run = s.get(Run, run_id)
                    run.progress_cell, run.progress_cells = message.get("cell"), message.get("cells")
                    s.commit()
            elif message.get("event") == "snapshot":
                self.snapshots[run_id] = message.get("notebook")

    def _cwd(self, notebook_path: str, owner: str) -> str:
        """The run's working directory: the notebook's folder in the user's home, if it exists."""
        home = self.executor.home_of(owner) or ""
        folder = os.path.dirname(notebook_path.lstrip("/"))
        if home and folder and ".." not in folder.split("/"):
            return os.path.join(home, folder)
        return home or "."

    @staticmethod
    def _banner(notebook: dict | None, reason: str) -> dict | None:
        """A partial output notebook with papermill-style banner saying why it stopped."""
        if notebook is None:
            return None
        notebook = json.loads(json.dumps(notebook))
        notebook.setdefault("cells", []).insert(0, {
            "cell_type": "markdown", "id": f"hubforge-{uuid.uuid4().hex[:8]}",
            "metadata": {"tags": ["hubforge-error"]},
            "source": f'<span style="color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:2em;">The run stopped: {reason}</span>',
        })
        return notebook

    # --- completion -----------------------------------------------------------------

    def complete(self, run_id: int, status: str, reason: str = "", notebook: dict | None = None) -> None:
        """Record a run's end: output notebook, status; then retry, notify, retention."""
        with self.sessions() as s:
            run = s.get(Run, run_id)
            if run is None:  # its job was deleted meanwhile
                self._remove_files(run_id)
                return
            if run.status != "running" or run.instance != self.instance:
                # Recorded already, or not this copy's to record.
                log.warning("run %s: not recording %s, the run is %s", run_id, status, run.status)
                return
            if notebook is not None:
                data = json.dumps(notebook).encode()
                limit = int(self.settings.max_notebook_mb * 2**20)
                if len(data) > limit:
                    reason = (reason + "; " if reason else "") + f"output notebook over {self.settings.max_notebook_mb:g} MiB, not kept"
                    if status == "succeeded":
                        status = "failed"
                else:
                    tmp = self.output_path(run_id).with_suffix(".tmp")
                    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                        f.write(data)
                    os.replace(tmp, self.output_path(run_id))
                    run.has_output = True
            self._finish(s, run, status, reason)
            job = run.job
            self._maybe_retry(s, run)
            s.commit()
            log.info("job %s run %s (%s): %s%s in %.2f s", job.id, run.id, job.owner, status,
                     f" ({reason})" if reason else "", run.duration or 0.0)
            try:
                self._notify(job, run)
                self.apply_retention(s, job)
            except Exception:  # the run is recorded; what follows must not un-record it
                log.exception("job %s run %s: notification or retention failed", job.id, run.id)

    def _finish(self, s, run: Run, status: str, reason: str) -> None:
        run.status = status
        run.reason = reason
        run.finished_at = utcnow()
        if run.started_at is None:
            run.started_at = run.finished_at
        if status == "succeeded" and run.progress_cells:
            run.progress_cell = run.progress_cells

    def _maybe_retry(self, s, run: Run) -> None:
        job = run.job
        if run.status in ("failed", "timed_out") and run.attempt <= job.retries:
            backoff = job.retry_backoff * 2 ** (run.attempt - 1) * random.uniform(0.8, 1.2)
            retry = self._queue(s, job, "retry", parameters=run.parameters, attempt=run.attempt + 1,
                                not_before=utcnow() + timedelta(seconds=backoff), retry_of=run.id)
            retry.scheduled_for = run.scheduled_for
            log.info("job %s run %s: retry %d of %d in %.1f s", job.id, run.id, run.attempt, job.retries, backoff)

    def cancel(self, run_id: int, by: str) -> bool:
        """Cancel a queued or running run; False if it had finished already."""
        with self.sessions() as s:
            run = s.get(Run, run_id)
            if run is None or run.status in FINAL_STATUSES:
                return False
            if run.status == "queued":
                self._finish(s, run, "cancelled", f"cancelled by {by}")
                s.commit()
                return True
            run.cancel_requested = by
            s.commit()
        event = self.cancels.get(run_id)
        if event is not None:
            event.by = by
            event.set()
        return True

    def forget_job(self, job_id: int, run_ids: list[int]) -> None:
        """After a job's deletion: cancel its runs in progress, remove its files."""
        for run_id in run_ids:
            event = self.cancels.get(run_id)
            if event is not None:
                event.by = "deletion of the job"
                event.set()
            else:
                self._remove_files(run_id)

    def _remove_files(self, run_id: int) -> None:
        for path in (self.output_path(run_id), self.log_path(run_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def apply_retention(self, s, job: Job) -> None:
        """Delete the job's finished runs beyond ``keep_runs`` or older than ``keep_days``."""
        retention = job.retention or self.settings.default_retention
        finished = s.scalars(select(Run).where(Run.job_id == job.id).where(Run.status.in_(FINAL_STATUSES))
                             .order_by(Run.id.desc())).all()
        doomed = []
        keep_runs, keep_days = retention.get("keep_runs"), retention.get("keep_days")
        cutoff = utcnow() - timedelta(days=keep_days) if keep_days else None
        for index, run in enumerate(finished):
            if (keep_runs and index >= keep_runs) or (cutoff and run.finished_at and run.finished_at < cutoff):
                doomed.append(run)
        for run in doomed:
            s.delete(run)
        if doomed:
            s.commit()
            for run in doomed:
                self._remove_files(run.id)
            log.info("job %s: retention removed %d runs", job.id, len(doomed))

    # --- notifications --------------------------------------------------------------

    def _notify(self, job: Job, run: Run) -> None:
        notify = job.notify or {}
        url = notify.get("url")
        on = notify.get("on") or ["failure"]
        event = "success" if run.status == "succeeded" else "failure" if run.status in ("failed", "timed_out") else None
        if not url or event not in on:
            return
        from .models import job_json, run_json

        body = {"event": f"run.{run.status}", "job": job_json(job, include_notify=False), "run": run_json(run)}
        task = asyncio.create_task(self._post_webhook(url, body, job.id, run.id))
        self.notify_tasks.add(task)
        task.add_done_callback(self.notify_tasks.discard)

    async def _post_webhook(self, url: str, body: dict, job_id: int, run_id: int) -> None:
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

        from urllib.parse import urlparse

        host = urlparse(url).hostname  # never log the URL: it often holds a token
        request = HTTPRequest(url, method="POST", body=json.dumps(body), headers={"Content-Type": "application/json"},
                              request_timeout=self.settings.webhook_timeout, follow_redirects=False)
        for attempt in range(3):
            try:
                await AsyncHTTPClient().fetch(request)
                log.info("job %s run %s: notified %s", job_id, run_id, host)
                return
            except (HTTPClientError, OSError) as e:
                status = getattr(e, "code", None)
                log.warning("job %s run %s: webhook to %s failed (try %d of 3): %s", job_id, run_id, host,
                            attempt + 1, f"HTTP {status}" if status else type(e).__name__)
            await asyncio.sleep(2**attempt * random.uniform(0.5, 1.5))

    # --- watch triggers -------------------------------------------------------------

    async def watch_loop(self) -> None:
        while True:
            try:
                if self.holding:
                    await asyncio.to_thread(self.check_watches)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checking watched paths failed; trying again")
            await asyncio.sleep(self.settings.watch_interval)

    def check_watches(self) -> None:
        from .watch import list_matches

        with self.sessions() as s:
            query = (select(Job).options(defer(Job.notebook)).where(Job.paused.is_(False))
                     .where(type_coerce(Job.trigger, Text).like('%"type": "watch"%')))
            for job in s.scalars(query):
                trigger = parse_trigger(job.trigger)
                home = self.executor.watch_root(job.owner)
                if not home:
                    continue
                try:
                    found = list_matches(home, trigger)
                except FileNotFoundError:
                    found = {}  # no folder (yet): no files
                except OSError as e:  # a hiccup (NFS, permissions): keep what was seen, try later
                    log.debug("job %s: cannot list %s: %s", job.id, trigger.directory, e)
                    continue
                seen = job.watch_state
                if seen is None:  # first look: what is there already is not new
                    job.watch_state = found
                    s.commit()
                    continue
                new = {path: stamp for path, stamp in found.items() if seen.get(path) != stamp}
                for path, stamp in sorted(new.items()):
                    try:
                        with s.begin_nested():  # one duplicate firing must not undo the others
                            self._queue(s, job, "watch", key=f"watch:{job.id}:{path}@{stamp}",
                                        parameters={trigger.parameter: path})
                    except IntegrityError:
                        log.debug("job %s: %s@%s has had its run", job.id, path, stamp)
                if new or set(seen) - set(found):
                    job.watch_state = found
                s.commit()


class CancelledRun(Exception):
    """A run was cancelled while the service waited for it."""
