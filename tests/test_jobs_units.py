"""The jobs service's parts without a hub: triggers, notebook inspection, settings, the
database (real SQLite and real PostgreSQL: migrations, the lease, firing a schedule once,
recovery after a restart, retention) and watched paths."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from sqlalchemy import func, select, text

from hubforge.exceptions import SettingsError
from hubforge.jobs.db import Job, Run, make_engine, sessions, take_lease, upgrade, utcnow
from hubforge.jobs.errors import InvalidJob
from hubforge.jobs.executors import Executor
from hubforge.jobs.notebooks import check_parameters, inspect
from hubforge.jobs.scheduler import Scheduler
from hubforge.jobs.settings import JobsSettings
from hubforge.jobs.triggers import CronTrigger, OnceTrigger, WatchTrigger, parse_trigger
from hubforge.jobs.watch import list_matches

PG_URL = os.environ.get("HUBFORGE_TEST_PG_URL", "")


# --- triggers ----------------------------------------------------------------------------


def test_cron_follows_local_time_across_daylight_saving():
    paris = CronTrigger("0 6 * * *", "Europe/Paris")
    before = paris.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC))
    after = paris.next_after(datetime(2026, 3, 29, 12, tzinfo=UTC))
    assert before == datetime(2026, 3, 29, 4, tzinfo=UTC)  # summer time starts that night
    assert after == datetime(2026, 3, 30, 4, tzinfo=UTC)
    assert CronTrigger("0 6 * * *").next_after(datetime(2026, 1, 1, 6, tzinfo=UTC)) == datetime(2026, 1, 2, 6, tzinfo=UTC)


@pytest.mark.parametrize("data,field,words", [
    ({"cron": "61 * * * *"}, "trigger.cron", "not a valid cron expression"),
    ({"cron": "* * *"}, "trigger.cron", "must have 5 fields"),
    ({"cron": ""}, "trigger.cron", "required"),
    ({"cron": "0 6 * * *", "timezone": "Mars/Olympus"}, "trigger.timezone", "unknown time zone"),
    ({"type": "cron", "cron": "0 6 * * *", "when": "now"}, "trigger.when", "not a field"),
    ({"type": "sometimes"}, "trigger.type", "unknown trigger type"),
    ({"type": "watch", "path": "/etc/*"}, "trigger.path", "inside your home"),
    ({"type": "watch", "path": "a/../../b"}, "trigger.path", "inside your home"),
    ({"type": "watch", "path": "*/x.csv"}, "trigger.path", "only the file name"),
    ({"type": "watch", "path": "data/**/*.csv"}, "trigger.path", "'**'"),
    ({"type": "watch", "path": "x/*.csv", "parameter": "not an identifier"}, "trigger.parameter", "identifier"),
    ("daily", "trigger", "must be an object"),
])
def test_bad_triggers_name_the_field(data, field, words):
    with pytest.raises(InvalidJob) as e:
        parse_trigger(data)
    assert e.value.field == field and words in e.value.reason


def test_trigger_forms():
    assert parse_trigger(None) == OnceTrigger() == parse_trigger({})
    assert parse_trigger({"cron": "0  6 * * *"}) == CronTrigger("0 6 * * *", "UTC")
    watch = parse_trigger({"type": "watch", "path": "./in/box/*.csv"})
    assert watch == WatchTrigger("in/box/*.csv") and watch.directory == "in/box"
    assert watch.matches("in/box/a.csv") and not watch.matches("in/box/a.txt") and not watch.matches("in/box/sub/a.csv")


# --- notebooks ---------------------------------------------------------------------------


def nb(parameters: str | None, kernel: str | None = "python3") -> dict:
    notebook = nbformat.v4.new_notebook()
    if parameters is not None:
        notebook.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    notebook.cells.append(nbformat.v4.new_code_cell("print(1)"))
    if kernel:
        notebook.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    return json.loads(nbformat.writes(notebook))


def test_parameters_are_typed_from_defaults_and_annotations():
    found = inspect(nb("a = 1\nb = 2.5  # the rate\nc = 'x'\nd = True\ne = [1, 2]\nf = {'k': 1}\ng: float = 3\nh = None"))
    assert [(p.name, p.type) for p in found.parameters] == [
        ("a", "int"), ("b", "float"), ("c", "str"), ("d", "bool"), ("e", "list"), ("f", "dict"), ("g", "float"), ("h", "any")]
    assert found.parameter("b").help == "the rate"
    ok = check_parameters({"a": 3, "b": 1, "c": "y", "d": False, "e": [], "f": {}, "g": 2, "h": "anything"}, found)
    assert ok["b"] == 1
    assert check_parameters({"a": None}, found) == {"a": None}


@pytest.mark.parametrize("values,field,words", [
    ({"a": "3"}, "parameters.a", "must be an int"),
    ({"a": True}, "parameters.a", "must be an int"),
    ({"b": "fast"}, "parameters.b", "must be a float"),
    ({"d": 1}, "parameters.d", "must be a bool"),
    ({"z": 1}, "parameters.z", "no such parameter"),
    ([1], "parameters", "must be an object"),
])
def test_wrong_parameters_name_the_parameter(values, field, words):
    found = inspect(nb("a = 1\nb = 2.5\nd = True"))
    with pytest.raises(InvalidJob) as e:
        check_parameters(values, found)
    assert e.value.field == field and words in e.value.reason


def test_notebook_problems():
    with pytest.raises(InvalidJob, match="no kernel"):
        inspect(nb("a = 1", kernel=None))
    with pytest.raises(InvalidJob, match="kernel 'ir' is not available to jobs; available: python3"):
        inspect(nb("a = 1", kernel="ir"), {"python3"})
    with pytest.raises(InvalidJob, match="not a valid notebook"):
        inspect({"cells": "nope", "nbformat": 4, "nbformat_minor": 5, "metadata": {}})
    with pytest.raises(InvalidJob, match="larger than 1 MiB"):
        inspect("x" * (2 * 2**20), max_bytes=2**20)
    without = inspect(nb(None))
    assert without.parameters == ()
    with pytest.raises(InvalidJob, match="no cell tagged 'parameters'"):
        check_parameters({"a": 1}, without)


# --- settings ----------------------------------------------------------------------------


class FakeSettings:
    source = "/etc/hubforge.yaml"

    def __init__(self, jobs):
        self.jobs = jobs


def test_jobs_settings_refuse_unknown_keys_and_bad_values():
    with pytest.raises(SettingsError, match=r"hubforge.yaml: jobs.max_runs: unknown setting"):
        JobsSettings.from_settings(FakeSettings({"max_runs": 3}))
    with pytest.raises(SettingsError, match=r"jobs.default_retention.keep_runs: must be a whole number"):
        JobsSettings.from_settings(FakeSettings({"default_retention": {"keep_runs": 0}}))
    with pytest.raises(SettingsError, match=r"jobs.missed"):
        JobsSettings.from_settings(FakeSettings({"missed": "always"}))
    jobs = JobsSettings.from_settings(FakeSettings({"max_concurrent_runs": 0}))
    assert jobs.concurrency == os.cpu_count()


# --- the database: SQLite and PostgreSQL -------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    else:
        if not PG_URL:
            pytest.skip("HUBFORGE_TEST_PG_URL is not set (no test PostgreSQL)")
        engine = make_engine(PG_URL)
        with engine.begin() as c:
            for table in ("runs", "leases", "jobs", "alembic_version"):
                c.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    upgrade(engine)
    yield engine
    engine.dispose()


def test_migrations_match_the_models(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from hubforge.jobs.db import Base

    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    # JSON columns are Text in the migration and JSONText (a Text) in the models.
    assert [d for d in diff if d[0] != "modify_type"] == []
    upgrade(engine)  # upgrading an up-to-date database changes nothing


def test_one_lease_holder_at_a_time(engine):
    make = sessions(engine)
    with make() as a, make() as b:
        assert take_lease(a, "scheduler", "copy-a", 0.3)
        assert not take_lease(b, "scheduler", "copy-b", 0.3)
        assert take_lease(a, "scheduler", "copy-a", -1)  # renewed, already expired (copy-a "stalled")
    with make() as b:
        assert take_lease(b, "scheduler", "copy-b", 10)  # expired: taken over
    with make() as a:
        assert not take_lease(a, "scheduler", "copy-a", 10)


def make_job(s, **fields) -> Job:
    values = dict(owner="ann", name="j", notebook_path="j.ipynb", notebook=nb("n = 1"), kernel="python3",
                  notebook_parameters=[], parameters={}, profile="default",
                  trigger={"type": "cron", "cron": "*/5 * * * *", "timezone": "UTC"}, timeout=60, retries=0,
                  retry_backoff=1.0, missed="run_once", notify=None, retention={}, paused=False)
    values.update(fields)
    job = Job(**values)
    s.add(job)
    s.commit()
    return job


def scheduler(engine, tmp_path, **settings) -> Scheduler:
    return Scheduler(sessions(engine), Executor(tmp_path), JobsSettings(**settings), tmp_path, profile_for=None)


def test_a_due_schedule_fires_once_even_from_two_copies(engine, tmp_path):
    one, two = scheduler(engine, tmp_path), scheduler(engine, tmp_path)
    due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    with one.sessions() as s:
        job_id = make_job(s, next_run_at=due).id
    one.fire_due()
    with two.sessions() as s:  # a second copy that missed the update still has the old time
        s.get(Job, job_id).next_run_at = due
        s.commit()
    two.fire_due()
    with one.sessions() as s:
        runs = s.scalars(select(Run)).all()
        job = s.get(Job, job_id)
        assert [(r.trigger, r.scheduled_for, r.status) for r in runs] == [("cron", due, "queued")]
        assert job.next_run_at > utcnow() and job.next_run_at.minute % 5 == 0


@pytest.mark.parametrize("policy,expected", [("run_once", ["missed"]), ("skip", [])])
def test_runs_missed_while_down_follow_the_policy(engine, tmp_path, policy, expected):
    sched = scheduler(engine, tmp_path)
    with sched.sessions() as s:
        make_job(s, missed=policy, next_run_at=utcnow() - timedelta(hours=3))  # 36 schedules missed
        make_job(s, name="paused", missed=policy, paused=True, next_run_at=utcnow() - timedelta(hours=3))
    asyncio.run(sched.recover())
    with sched.sessions() as s:
        assert [r.trigger for r in s.scalars(select(Run))] == expected
        assert all(j.next_run_at > utcnow() for j in s.scalars(select(Job)))


def test_runs_interrupted_by_a_restart_fail_or_retry(engine, tmp_path):
    sched = scheduler(engine, tmp_path)
    with sched.sessions() as s:
        once = make_job(s, name="once", retries=0, next_run_at=None)
        retried = make_job(s, name="retried", retries=1, next_run_at=None)
        for job in (once, retried):
            s.add(Run(job_id=job.id, owner="ann", trigger="manual", status="running", parameters={"n": 2},
                      started_at=utcnow(), instance="a-dead-copy"))
        s.commit()
    asyncio.run(sched.recover())
    with sched.sessions() as s:
        runs = s.scalars(select(Run).order_by(Run.id)).all()
        assert [(r.job.name, r.status, r.attempt, r.trigger) for r in runs] == [
            ("once", "failed", 1, "manual"), ("retried", "failed", 1, "manual"), ("retried", "queued", 2, "retry")]
        assert runs[0].reason == "the jobs service stopped during the run"
        assert runs[2].parameters == {"n": 2} and runs[2].not_before > utcnow()


def test_retention_by_count_and_age(engine, tmp_path):
    sched = scheduler(engine, tmp_path)
    with sched.sessions() as s:
        job = make_job(s, retention={"keep_runs": 3, "keep_days": 7}, next_run_at=None)
        ages = [30, 10, 3, 2, 1, 0]  # days ago
        for days in ages:
            when = utcnow() - timedelta(days=days)
            s.add(Run(job_id=job.id, owner="ann", trigger="manual", status="succeeded", parameters={},
                      started_at=when, finished_at=when))
        s.add(Run(job_id=job.id, owner="ann", trigger="manual", status="queued", parameters={}))
        s.commit()
        for run in s.scalars(select(Run)):
            sched.output_path(run.id).write_text("{}")
        sched.apply_retention(s, job)
        left = s.scalars(select(Run).order_by(Run.id)).all()
        assert [r.status for r in left] == ["succeeded"] * 3 + ["queued"]
        assert sorted(p.name for p in sched.runs_dir.iterdir()) == sorted(f"{r.id}.ipynb" for r in left)


# --- watched paths -----------------------------------------------------------------------


def test_watch_lists_regular_files_and_never_follows_links(tmp_path):
    home = tmp_path / "home"
    (home / "in").mkdir(parents=True)
    (home / "in" / "a.csv").write_text("1")
    (home / "in" / "b.txt").write_text("1")
    (home / "in" / "sub.csv").mkdir()
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwords.csv").write_text("x")
    os.symlink(secret / "passwords.csv", home / "in" / "link.csv")
    found = list_matches(str(home), WatchTrigger("in/*.csv"))
    assert list(found) == ["in/a.csv"]
    # A watched folder replaced by a link to somewhere else is not listed at all.
    os.symlink(secret, home / "elsewhere")
    with pytest.raises(OSError):
        list_matches(str(home), WatchTrigger("elsewhere/*.csv"))
    assert list_matches(str(home), WatchTrigger("*.csv")) == {}


def test_openapi_document_is_well_formed():
    from hubforge.jobs.openapi import openapi_document

    doc = openapi_document("/@/x/services/jobs/")
    assert doc["servers"] == [{"url": "/@/x/services/jobs"}]
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs <= set(doc["components"]["schemas"])
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert op["responses"] and op["summary"], (path, method)
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == {part[1:-1] for part in path.split("/") if part.startswith("{")}, (path, method)


def test_files_of_a_run_are_private(tmp_path):
    sched = scheduler(make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}"), tmp_path)
    assert Path(sched.runs_dir).stat().st_mode & 0o777 == 0o700


async def test_one_users_backlog_does_not_starve_others(engine, tmp_path):
    """Users at their concurrency limit are left out of the queue's query, so another
    user's run is dispatched even behind hundreds of theirs."""
    sched = scheduler(engine, tmp_path, max_concurrent_runs=8, max_concurrent_runs_per_user=2)
    with sched.sessions() as s:
        job = make_job(s, next_run_at=None)
        other = make_job(s, owner="bob", name="b", next_run_at=None)
        busy = [Run(job_id=job.id, owner="ann", trigger="manual", status="running", parameters={}) for _ in range(2)]
        s.add_all(busy)
        s.add_all([Run(job_id=job.id, owner="ann", trigger="manual", status="queued", parameters={})
                   for _ in range(250)])
        s.commit()
        bobs = Run(job_id=other.id, owner="bob", trigger="manual", status="queued", parameters={})
        s.add(bobs)
        s.commit()
        busy_ids, bob_id = [r.id for r in busy], bobs.id
    blocker = asyncio.get_running_loop().create_future()
    for run_id in busy_ids:
        sched.running[run_id] = blocker
    sched.dispatch()
    try:
        with sched.sessions() as s:
            assert s.get(Run, bob_id).status == "running"
            assert s.scalar(select(func.count(Run.id)).where(Run.owner == "ann", Run.status == "running")) == 2
    finally:
        for task in list(sched.running.values()):
            task.cancel()
        await asyncio.gather(*[t for t in sched.running.values() if t is not blocker], return_exceptions=True)


def test_run_ids_are_never_reused(engine, tmp_path):
    sched = scheduler(engine, tmp_path)
    with sched.sessions() as s:
        job = make_job(s, next_run_at=None)
        run = Run(job_id=job.id, owner="ann", trigger="manual", status="queued", parameters={})
        s.add(run)
        s.commit()
        first = run.id
        s.delete(run)
        s.commit()
        again = Run(job_id=job.id, owner="ann", trigger="manual", status="queued", parameters={})
        s.add(again)
        s.commit()
        assert again.id > first


async def test_a_copy_that_loses_the_lease_stops_its_runs(engine, tmp_path):
    sched = scheduler(engine, tmp_path, lease_seconds=-1)  # a lease that lapses at once
    await sched.tick()
    assert sched.holding
    stop = asyncio.Event()
    sched.cancels[12345] = stop  # a run this copy is executing
    with sched.sessions() as s:
        assert take_lease(s, "scheduler", "another-copy", 60)
    await sched.tick()
    assert not sched.holding and stop.is_set()
    assert "another copy" in stop.by
