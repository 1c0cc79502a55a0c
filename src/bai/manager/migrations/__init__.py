"""Alembic migrations of the manager's store; run at start by bai.manager.store.db."""
