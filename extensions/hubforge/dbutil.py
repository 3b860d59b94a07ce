"""What the services' databases share: engines, JSON columns, Alembic upgrades, UTC times.

The jobs and models services each keep their own database (SQLite in the hub's data
directory by default, PostgreSQL when configured) with their own Alembic migrations;
these helpers are the part that is the same for both.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """Now, as the naive UTC the databases store."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(when: datetime | None) -> str | None:
    """A stored time as ISO 8601 with a ``Z``."""
    return None if when is None else when.replace(microsecond=when.microsecond // 1000 * 1000).isoformat() + "Z"


class JSONText(TypeDecorator):
    """JSON in a text column: the same on SQLite and PostgreSQL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else json.dumps(value)

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets foreign keys on, WAL and a busy timeout."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade(engine: Engine, migrations: Path) -> None:
    """Create or upgrade the schema to the newest revision of the Alembic folder `migrations`."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
