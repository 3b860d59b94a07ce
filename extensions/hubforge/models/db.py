"""The model registry's database: models, their immutable versions, aliases and history.

SQLAlchemy 2 on SQLite (default, ``models.sqlite`` in the hub's data directory) or
PostgreSQL (``models.db_url``), created and upgraded by Alembic (``migrations/``). A
version's files live beside it on disk (``<data_dir>/models/store/<name>/<version>/``);
the row holds what the API shows: signature, requirements, size, who published it.
An alias is a row per (model, alias) with an optional canary; every change of an alias
is appended to ``alias_events``, which is what ``rollback`` reads.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from ..dbutil import JSONText, make_engine, utcnow  # noqa: F401 (make_engine re-exported)
from ..dbutil import upgrade as _upgrade


class Base(DeclarativeBase):
    """The registry's tables (Alembic compares its metadata with the migrations)."""


class Model(Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    shared_with: Mapped[Any] = mapped_column(JSONText, default=dict)
    next_version: Mapped[int] = mapped_column(Integer, default=1)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    versions: Mapped[list[Version]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True, order_by="Version.number")
    aliases: Mapped[list[Alias]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True, order_by="Alias.name")


class Version(Base):
    __tablename__ = "versions"

    model_name: Mapped[str] = mapped_column(ForeignKey("models.name", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    signature: Mapped[Any] = mapped_column(JSONText, nullable=True)
    requirements: Mapped[Any] = mapped_column(JSONText, default=list)
    flavors: Mapped[Any] = mapped_column(JSONText, default=list)
    size: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str] = mapped_column(String(64))

    model: Mapped[Model] = relationship(back_populates="versions")


class Alias(Base):
    __tablename__ = "aliases"

    model_name: Mapped[str] = mapped_column(ForeignKey("models.name", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    canary_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    canary_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(255), default="")

    model: Mapped[Model] = relationship(back_populates="aliases")


class AliasEvent(Base):
    """One change of an alias: what it pointed at before and after (for rollback and audit)."""

    __tablename__ = "alias_events"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(ForeignKey("models.name", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(63))
    before: Mapped[int | None] = mapped_column(Integer, nullable=True)
    after: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    by: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def upgrade(engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision."""
    _upgrade(engine, Path(__file__).parent / "migrations")


def sessions(engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
