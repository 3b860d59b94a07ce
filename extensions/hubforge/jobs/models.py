"""The JSON forms of jobs and runs the REST API answers with (docs/jobs.md)."""

from __future__ import annotations

from .db import Job, Run, iso
from .triggers import parse_trigger


def run_json(run: Run) -> dict:
    progress = None
    if run.progress_cells:
        progress = {"cell": run.progress_cell or 0, "cells": run.progress_cells}
    return {
        "id": run.id,
        "job_id": run.job_id,
        "job_name": run.job.name if run.job is not None else None,
        "owner": run.owner,
        "attempt": run.attempt,
        "trigger": run.trigger,
        "status": run.status,
        "parameters": run.parameters or {},
        "scheduled_for": iso(run.scheduled_for),
        "queued_at": iso(run.queued_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration": run.duration,
        "progress": progress,
        "reason": run.reason or "",
        "has_output": bool(run.has_output),
    }


def job_json(job: Job, *, last_run: Run | None = None, include_notify: bool = True) -> dict:
    trigger = parse_trigger(job.trigger)
    model = {
        "id": job.id,
        "name": job.name,
        "owner": job.owner,
        "notebook": job.notebook_path,
        "kernel": job.kernel,
        "notebook_parameters": job.notebook_parameters or [],
        "parameters": job.parameters or {},
        "profile": job.profile,
        "trigger": trigger.to_json(),
        "trigger_description": trigger.describe(),
        "timeout": job.timeout,
        "retries": job.retries,
        "retry_backoff": job.retry_backoff,
        "missed": job.missed,
        "retention": job.retention or {},
        "paused": bool(job.paused),
        "created": iso(job.created),
        "updated": iso(job.updated),
        "next_run": iso(job.next_run_at),
        "last_run": run_json(last_run) if last_run is not None else None,
    }
    if trigger.type == "watch":
        # How many matching files the watch has seen (None before its first look).
        model["watched_files"] = len(job.watch_state) if job.watch_state is not None else None
    if include_notify:
        model["notify"] = job.notify
    return model
