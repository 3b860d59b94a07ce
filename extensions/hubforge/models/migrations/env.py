"""Alembic environment of the model registry: run with the connection the service gives."""

from alembic import context

from hubforge.models.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
