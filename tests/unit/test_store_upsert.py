"""Database.upsert: one statement per table and set of columns, the values its parameters;
rows are inserted, then updated, and each write lands with its own values."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bai.manager.store.db import Database
from bai.manager.store.tables import SessionRow


def _values(session_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return dict(
        id=session_id, name=f"name-{session_id}", access_key="AKIAUPSERTUPSERTUPS1", image="python",
        type="interactive", tag=None, status=status, status_info=None, agent_id="a1",
        requested_slots={"cpu": "1"}, occupied_slots={}, environ={"A": "1"}, num_queries=0, last_stat=None,
        limits={"policy": "default"}, created_at=datetime(2026, 1, 1, tzinfo=UTC), terminated_at=None, **extra,
    )


async def _rows(db: Database) -> dict[str, SessionRow]:
    async with db.sessionmaker() as s:
        return {row.id: row for row in (await s.scalars(select(SessionRow))).all()}


async def test_upsert_inserts_then_updates_with_each_writes_values(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    await db.migrate()
    try:
        await db.upsert(SessionRow, _values("s1", "PENDING"))
        await db.upsert(SessionRow, _values("s2", "PENDING"))
        await db.upsert(SessionRow, _values("s1", "RUNNING") | {"num_queries": 3, "last_stat": {"cpu": 1}})
        await db.upsert(SessionRow, _values("s2", "TERMINATED") | {"status_info": "user-requested", "environ": {}})
        rows = await _rows(db)
    finally:
        await db.close()
    assert (rows["s1"].status, rows["s1"].num_queries, rows["s1"].last_stat) == ("RUNNING", 3, {"cpu": 1})
    assert (rows["s2"].status, rows["s2"].status_info, rows["s2"].environ) == ("TERMINATED", "user-requested", {})
    assert len(db._upserts) == 1  # built once, reused


async def test_the_sqlite_writer_stores_what_the_engine_would(tmp_path: Path) -> None:
    """The writer's plain connection (SQLite files) and the engine store the same values,
    None, JSON and datetimes included; the engine path is what PostgreSQL gets."""
    writes = [
        _values("s1", "PENDING"),
        _values("s1", "TERMINATED") | {"last_stat": None, "terminated_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},
        _values("s2", "RUNNING") | {"tag": "t", "last_stat": {"mem": {"current": 7}}, "environ": {"K": "é"}},
    ]
    tables = []
    for raw in (True, False):
        path = tmp_path / f"{raw}.sqlite3"
        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.migrate()
        assert db._writer is not None
        if not raw:
            await db._writer.close()
            db._writer = None
        try:
            for values in writes:
                await db.upsert(SessionRow, values)
        finally:
            await db.close()
        with sqlite3.connect(path) as conn:
            tables.append(conn.execute("SELECT * FROM sessions ORDER BY id").fetchall())
    assert tables[0] == tables[1]
    assert len(tables[0]) == 2
