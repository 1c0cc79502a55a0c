"""Engine creation and migration at start."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.dml import Insert

from bai.manager.store.writer import SqliteWriter

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """Owns the engine; ``sessionmaker`` hands out AsyncSessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url)
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._upserts: dict[tuple[type[DeclarativeBase], tuple[str, ...]], Insert] = {}
        self._raw_upserts: dict[tuple[type[DeclarativeBase], tuple[str, ...]], RawStatement] = {}
        database = self.engine.url.database
        file_backed = self.engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        self._writer = SqliteWriter(str(database)) if file_backed else None

    async def migrate(self) -> None:
        """Bring the schema to the newest revision."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)

    async def upsert(self, table: type[DeclarativeBase], values: dict[str, Any]) -> None:
        """Insert a row, or update every given column of the row with its primary key:
        one statement, no read first (the ORM's merge reads, then writes). The statement
        is built once per table and set of columns, the values are its parameters (building
        and cache-keying a statement with the values in it cost more than running it)."""
        names = tuple(values)
        if self._writer is not None:  # SQLite: the statement on the writer's plain connection
            raw = self._raw_upsert(table, names)
            await self._writer.execute(raw.sql, raw.params(values))
            return
        stmt = self._upsert_statement(table, names)
        async with self.engine.begin() as conn:
            await conn.execute(stmt, values)

    def _raw_upsert(self, table: type[DeclarativeBase], names: tuple[str, ...]) -> RawStatement:
        raw = self._raw_upserts.get((table, names))
        if raw is None:
            dialect = self.engine.dialect
            compiled = self._upsert_statement(table, names).compile(dialect=dialect, column_keys=list(names))
            order = list(compiled.positiontup or [])
            if sorted(order) != sorted(names):
                raise RuntimeError(f"unexpected parameters of the upsert of {table.__tablename__}: {order}")
            columns = table.__table__.c
            processors = [columns[name].type.dialect_impl(dialect).bind_processor(dialect) for name in order]
            raw = self._raw_upserts[(table, names)] = RawStatement(compiled.string, order, processors)
        return raw

    def _upsert_statement(self, table: type[DeclarativeBase], names: tuple[str, ...]) -> Insert:
        stmt = self._upserts.get((table, names))
        if stmt is None:
            insert = sqlite.insert if self.engine.dialect.name == "sqlite" else postgresql.insert
            keys = [column.name for column in table.__table__.primary_key]
            base = insert(table)
            stmt = self._upserts[(table, names)] = base.on_conflict_do_update(
                index_elements=keys, set_={name: base.excluded[name] for name in names if name not in keys}
            )
        return stmt

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        await self.engine.dispose()


@dataclass(frozen=True)
class RawStatement:
    """A compiled statement with positional parameters, and each one's bind processor."""

    sql: str
    names: list[str]
    processors: Sequence[Callable[[Any], Any] | None]

    def params(self, values: dict[str, Any]) -> list[Any]:
        out = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = values[name]
            out.append(process(value) if process is not None else value)
        return out


def _upgrade(connection: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
