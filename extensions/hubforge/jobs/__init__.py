"""Scheduled notebook jobs: papermill runs of a notebook on a schedule, once, or when a
file lands, executed by the hub's ``jobs`` service whether or not the user is logged in.

The notebook-side API (what ``import hubforge.jobs as jobs`` gives) calls the service
over REST with the server's token; docs/jobs.md has the whole story::

    import hubforge.jobs as jobs
    job = jobs.schedule(cron="0 6 * * *", parameters={"alpha": 0.5})
    run = jobs.run_now(job["id"])
    jobs.wait(run["id"])

The service itself is :mod:`hubforge.jobs.service` (REST API and Jobs page) over
:mod:`~hubforge.jobs.scheduler` (triggers, queue, runs), :mod:`~hubforge.jobs.executors`
(local processes, containers) and :mod:`~hubforge.jobs.runner` (one notebook run).
"""

from .client import (
    JobsError,
    cancel,
    delete,
    get_job,
    get_run,
    inspect,
    list_jobs,
    log,
    output,
    pause,
    profiles,
    resume,
    run_now,
    runs,
    schedule,
    update,
    wait,
)

__all__ = [
    "JobsError", "JobsWidget", "cancel", "delete", "get_job", "get_run", "inspect", "list_jobs", "log",
    "output", "pause", "profiles", "resume", "run_now", "runs", "schedule", "update", "wait",
]


def __getattr__(name):
    # The widget imports IPython and ipywidgets: only notebooks need them, not the service.
    if name == "JobsWidget":
        from .widgets import JobsWidget

        return JobsWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
