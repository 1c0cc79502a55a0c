"""Alembic environment: always handed a live connection by bai.manager.store.db."""

from __future__ import annotations

from alembic import context

from bai.manager.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
