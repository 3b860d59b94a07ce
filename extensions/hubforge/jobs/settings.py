"""The ``jobs:`` section of ``hubforge.yaml``: the scheduled-jobs service's settings.

Every key is optional; ``docs/configuration.md`` lists them (generated from the help
texts below). Example::

    jobs:
      max_concurrent_runs: 4
      max_concurrent_runs_per_user: 2
      default_timeout: 3600
"""

from __future__ import annotations

import os

from traitlets import Bool, Dict, Enum, Float, Integer, Unicode, validate

from ..exceptions import SettingsError
from ..settings import SettingsSection


class JobsSettings(SettingsSection):
    """The ``jobs:`` section of ``hubforge.yaml`` (every key optional)."""

    section = "jobs"

    enabled = Bool(
        True,
        help="Run the ``jobs`` hub service (scheduled notebooks). Default true.",
    ).tag(config=True)

    db_url = Unicode(
        "",
        help="""SQLAlchemy URL of the jobs database, e.g.
        ``postgresql://jobs:...@db/jobs``. Default: ``jobs.sqlite`` in the hub's data
        directory. The environment variable ``HUBFORGE_JOBS_DB_URL`` overrides it (keep
        passwords out of the settings file).""",
    ).tag(config=True)

    max_concurrent_runs = Integer(
        0,
        help="""Runs executing at once on this machine, all users together; more wait
        queued. Default 0: the number of CPUs.""",
    ).tag(config=True)

    max_concurrent_runs_per_user = Integer(
        2,
        help="Runs of one user executing at once; more wait queued. Default 2.",
    ).tag(config=True)

    default_timeout = Integer(
        3600,
        help="Seconds a run may take when its job sets no ``timeout``. Default 3600.",
    ).tag(config=True)

    max_timeout = Integer(
        86400,
        help="The largest ``timeout`` a job may set, in seconds. Default 86400 (one day).",
    ).tag(config=True)

    max_jobs_per_user = Integer(
        200,
        help="The most job definitions one user may have; creating more answers 409. Default 200.",
    ).tag(config=True)

    max_retries = Integer(
        5,
        help="The most ``retries`` a job may set. Default 5.",
    ).tag(config=True)

    default_retention = Dict(
        {"keep_runs": 100, "keep_days": 90},
        help="""Runs kept per job when the job sets no ``retention``: the newest
        ``keep_runs`` and those younger than ``keep_days`` days. Default
        ``{keep_runs: 100, keep_days: 90}``.""",
    ).tag(config=True)

    missed = Enum(
        ["run_once", "skip"],
        "run_once",
        help="""Default for a job's ``missed``: what happens to cron runs missed while the
        service was down: ``run_once`` (one run when it starts again) or ``skip``.""",
    ).tag(config=True)

    warm_kernels = Bool(
        True,
        help="""Start each profile's next kernel before it is needed (a fresh one per run,
        never reused), so a run starts in milliseconds instead of the seconds a kernel
        takes to start. Default true. Warm kernels take memory: about 60 MB each.""",
    ).tag(config=True)

    warm_runners = Integer(
        3,
        help="""Warm runners kept per user, profile and kernel while they are in use (at
        most ``max_concurrent_runs_per_user`` + 1), so that runs started together, or
        back to back, each find one ready. Default 3; each takes about 60 MB while it
        waits (``warm_idle_seconds``).""",
    ).tag(config=True)

    warm_idle_seconds = Float(
        300,
        help="""Seconds a warm kernel waits for a run before it is stopped. Default 300.
        A cron job's kernel is warmed ``prewarm_seconds`` before its time.""",
    ).tag(config=True)

    prewarm_seconds = Float(
        15,
        help="Seconds before a cron run's time that its kernel is started. Default 15.",
    ).tag(config=True)

    watch_interval = Float(
        10,
        help="Seconds between checks of the watched paths of ``watch`` triggers. Default 10.",
    ).tag(config=True)

    webhook_timeout = Float(
        10,
        help="Seconds a notification webhook may take to answer (3 tries, with backoff). Default 10.",
    ).tag(config=True)

    max_notebook_mb = Float(
        20,
        help="Largest notebook a job may hold, and largest output notebook kept, in MiB. Default 20.",
    ).tag(config=True)

    lease_seconds = Float(
        15,
        help="""Seconds the running service's scheduler lease lasts without renewal; a second
        copy of the service on the same database fires nothing until it expires. Default 15.""",
    ).tag(config=True)

    @validate("default_retention")
    def _check_retention(self, proposal):
        check_retention(proposal["value"], self.where("default_retention"), SettingsError)
        return proposal["value"]

    @property
    def concurrency(self) -> int:
        return self.max_concurrent_runs or os.cpu_count() or 1


def check_retention(value, field: str, error=None) -> dict:
    """``{keep_runs: N, keep_days: D}`` (both optional, positive integers)."""
    from .errors import InvalidJob

    def fail(key: str, reason: str):
        if error is None:
            raise InvalidJob(f"{field}.{key}" if key else field, reason)
        raise error(f"{field}{'.' + key if key else ''}: {reason}")

    if not isinstance(value, dict):
        fail("", f"must be an object like {{keep_runs: 50, keep_days: 30}}, got {value!r}")
    for key, item in value.items():
        if key not in ("keep_runs", "keep_days"):
            fail(key, "unknown field; use keep_runs and/or keep_days")
        high = 100_000 if key == "keep_runs" else 36_500
        if item is not None and (not isinstance(item, int) or isinstance(item, bool) or not 1 <= item <= high):
            fail(key, f"must be a whole number from 1 to {high}, got {item!r}")
    return {k: v for k, v in value.items() if v is not None}
