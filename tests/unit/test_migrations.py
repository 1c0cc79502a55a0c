"""Migrations carry data forward: a database made by an older revision upgrades to head
with its keypairs intact."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from bai.manager.config import ManagerConfig
from bai.manager.policies import DEFAULT_POLICY
from bai.manager.store.db import MIGRATIONS_DIR, Database


def _config(connection) -> Config:  # type: ignore[no-untyped-def]
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


async def test_upgrade_from_the_first_revision_keeps_keypairs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0001")
        conn.execute(text(
            "INSERT INTO keypairs VALUES ('AKIAOLDOLDOLDOLDOLD1', 'secret', 'old', 1, 1, 5, 100, '2024-01-01 00:00:00')"
        ))
    engine.dispose()
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.migrate()
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT access_key, user_id, expires_at FROM keypairs"))).all()
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    await db.close()
    assert [tuple(r) for r in rows] == [("AKIAOLDOLDOLDOLDOLD1", "old", None)]
    assert version == "0003"


async def test_upgrade_from_0002_gives_every_keypair_the_default_policy(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0002")
        conn.execute(text(
            "INSERT INTO keypairs VALUES ('AKIAOLDOLDOLDOLDOLD2', 'secret', 'old', 0, 1, 5, 100, "
            "'2024-01-01 00:00:00', NULL)"
        ))
    engine.dispose()
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.migrate()
    async with db.engine.connect() as conn:
        keypairs = (await conn.execute(text("SELECT access_key, user_id, resource_policy FROM keypairs"))).all()
        policies = (await conn.execute(text(
            "SELECT name, total_resource_slots, max_session_slots, exec_timeout_s, idle_timeout_s "
            "FROM resource_policies"
        ))).all()
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    await db.close()
    assert [tuple(r) for r in keypairs] == [("AKIAOLDOLDOLDOLDOLD2", "old", "default")]
    assert [tuple(r) for r in policies] == [("default", "{}", "{}", None, 3600.0)]
    assert version == "0003"


def test_the_default_policy_follows_the_manager_defaults() -> None:
    """The migration's "default" row carries the manager's own default exec timeout (none)."""
    from importlib import import_module

    migration = import_module("bai.manager.migrations.versions.0003_resource_policies")
    assert migration.DEFAULT_POLICY["exec_timeout_s"] == ManagerConfig().exec_timeout_s
    assert migration.DEFAULT_POLICY["name"] == DEFAULT_POLICY
