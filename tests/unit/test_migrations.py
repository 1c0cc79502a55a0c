"""Migrations carry data forward: a database made by revision 0001 upgrades to head
with its keypairs intact."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

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
    assert version == "0002"
