"""The jobs service's database: job definitions, runs and the scheduler lease.

SQLAlchemy 2 models on SQLite (default, a file in the hub's data directory) or
PostgreSQL (``jobs.db_url``); the schema is created and upgraded by Alembic
(:func:`upgrade`, run by the service at start, migrations in ``migrations/``). Times are
stored as naive UTC.

Two copies of the service may share one database (a restart overlapping the old
process, or two hubs by mistake). Two things keep them from firing a schedule twice:

* the **lease** (:func:`take_lease`): one row that a copy renews every few seconds with
  a single conditional ``UPDATE``; only the holder fires triggers and starts runs;
* a **unique trigger key** per run (``cron:<job>:<time>``, ``watch:<job>:<file>@<mtime>``):
  even a copy that lost its lease without noticing cannot insert the same firing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from ..dbutil import JSONText, iso, make_engine, utcnow  # noqa: F401 (re-exported)
from ..dbutil import upgrade as _upgrade

FINAL_STATUSES = ("succeeded", "failed", "timed_out", "cancelled")
STATUSES = ("queued", "running", *FINAL_STATUSES)


def naive(when: datetime) -> datetime:
    """An aware time as the naive UTC the database stores."""
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


class Base(DeclarativeBase):
    """The jobs database's tables (Alembic compares its metadata with the migrations)."""


class Job(Base):
    __tablename__ = "jobs"
    # AUTOINCREMENT on SQLite: an id is never handed out twice, even after deletions
    # (a deleted run's late result must not land on a new run with its id).
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_jobs_owner_name"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255))
    notebook_path: Mapped[str] = mapped_column(Text)
    notebook: Mapped[Any] = mapped_column(JSONText)
    kernel: Mapped[str] = mapped_column(String(255))
    notebook_parameters: Mapped[Any] = mapped_column(JSONText, default=list)
    parameters: Mapped[Any] = mapped_column(JSONText, default=dict)
    profile: Mapped[str] = mapped_column(String(255))
    trigger: Mapped[Any] = mapped_column(JSONText)
    timeout: Mapped[int] = mapped_column(Integer)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_backoff: Mapped[float] = mapped_column(Float, default=30.0)
    missed: Mapped[str] = mapped_column(String(16), default="run_once")
    notify: Mapped[Any] = mapped_column(JSONText, nullable=True)
    retention: Mapped[Any] = mapped_column(JSONText, default=dict)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    watch_state: Mapped[Any] = mapped_column(JSONText, nullable=True)

    runs: Mapped[list[Run]] = relationship(back_populates="job", cascade="all, delete-orphan", passive_deletes=True)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("trigger_key", name="uq_runs_trigger_key"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    trigger: Mapped[str] = mapped_column(String(16))
    trigger_key: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    parameters: Mapped[Any] = mapped_column(JSONText, default=dict)
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    queued_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    not_before: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    progress_cell: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_cells: Mapped[int | None] = mapped_column(Integer, nullable=True)
    has_output: Mapped[bool] = mapped_column(Boolean, default=False)
    retry_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    instance: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[str | None] = mapped_column(String(255), nullable=True)

    job: Mapped[Job] = relationship(back_populates="runs")

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return round((end - self.started_at).total_seconds(), 3)


class Lease(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime)


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision."""
    _upgrade(engine, Path(__file__).parent / "migrations")


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def take_lease(session, name: str, holder: str, seconds: float) -> bool:
    """Take or renew the lease `name` for `holder`; True if `holder` holds it now.

    One conditional UPDATE (atomic on SQLite and PostgreSQL): it succeeds when the
    lease is free, expired or already ours. The row is created on first use.
    """
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    result = session.execute(
        update(Lease)
        .where(Lease.name == name)
        .where((Lease.holder == holder) | (Lease.expires_at < now))
        .values(holder=holder, expires_at=until)
    )
    if result.rowcount == 1:
        session.commit()
        return True
    if session.get(Lease, name) is None:
        session.add(Lease(name=name, holder=holder, expires_at=until))
        try:
            session.commit()
            return True
        except Exception:  # another copy created it first: it holds the lease
            session.rollback()
            return False
    session.rollback()
    return False


def release_lease(session, name: str, holder: str) -> None:
    session.execute(
        update(Lease).where(Lease.name == name).where(Lease.holder == holder).values(expires_at=datetime(1970, 1, 1))
    )
    session.commit()
