"""Keypairs: the durable rows and an in-memory cache, so authenticating a
request costs no query. Every change goes to the database first, then the cache."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import delete, select, update

from bai.common.errors import InvalidRequest, NotFound
from bai.manager.clock import Clock
from bai.manager.store.db import Database
from bai.manager.store.tables import KeypairRow

_ACCESS_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


@dataclass(frozen=True)
class Keypair:
    access_key: str
    secret_key: str
    user_id: str
    is_admin: bool
    is_active: bool
    concurrency_limit: int
    rate_limit: int
    created_at: datetime
    expires_at: datetime | None = None
    resource_policy: str = "default"

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; ours are all UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def new_access_key() -> str:
    """20 characters, the official ``AKIA…`` shape."""
    return "AKIA" + "".join(secrets.choice(_ACCESS_ALPHABET) for _ in range(16))


def new_secret_key() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))


def _from_row(row: KeypairRow) -> Keypair:
    return Keypair(
        access_key=row.access_key,
        secret_key=row.secret_key,
        user_id=row.user_id,
        is_admin=row.is_admin,
        is_active=row.is_active,
        concurrency_limit=row.concurrency_limit,
        rate_limit=row.rate_limit,
        created_at=_aware(row.created_at),
        expires_at=_aware(row.expires_at) if row.expires_at is not None else None,
        resource_policy=row.resource_policy,
    )


class KeypairRegistry:
    """The keypairs, cached. ``clock.utc`` (the manager's clock, bai.manager.clock; the
    system's unless one is passed) stamps ``created_at`` and is what a new keypair's
    ``expires_at`` must lie after."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self.clock = clock or Clock()
        self._cache: dict[str, Keypair] = {}

    async def load(self) -> None:
        async with self._db.sessionmaker() as s:
            rows = (await s.scalars(select(KeypairRow))).all()
        self._cache = {row.access_key: _from_row(row) for row in rows}

    def get(self, access_key: str) -> Keypair | None:
        return self._cache.get(access_key)

    def all(self) -> list[Keypair]:
        return sorted(self._cache.values(), key=lambda k: k.created_at)

    def require(self, access_key: str) -> Keypair:
        keypair = self._cache.get(access_key)
        if keypair is None:
            raise NotFound(f"no such keypair: {access_key}")
        return keypair

    async def create(
        self,
        *,
        user_id: str,
        is_admin: bool,
        concurrency_limit: int,
        rate_limit: int,
        access_key: str | None = None,
        secret_key: str | None = None,
        expires_at: datetime | None = None,
        resource_policy: str = "default",
    ) -> Keypair:
        """A new keypair; the caller checks that ``resource_policy`` exists."""
        if concurrency_limit < 1 or rate_limit < 1:
            raise InvalidRequest("limits must be at least 1", field="concurrency_limit")
        now = self.clock.utc()
        if expires_at is not None:
            expires_at = _aware(expires_at)
            if expires_at <= now:
                raise InvalidRequest("expires_at: must be in the future", field="expires_at")
        keypair = Keypair(
            access_key=access_key or new_access_key(),
            secret_key=secret_key or new_secret_key(),
            user_id=user_id,
            is_admin=is_admin,
            is_active=True,
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            created_at=now,
            expires_at=expires_at,
            resource_policy=resource_policy,
        )
        async with self._db.sessionmaker() as s, s.begin():
            s.add(KeypairRow(**keypair.__dict__))
        self._cache[keypair.access_key] = keypair
        return keypair

    async def set_active(self, access_key: str, active: bool) -> Keypair:
        keypair = self.require(access_key)
        async with self._db.sessionmaker() as s, s.begin():
            await s.execute(
                update(KeypairRow).where(KeypairRow.access_key == access_key).values(is_active=active)
            )
        keypair = replace(keypair, is_active=active)
        self._cache[access_key] = keypair
        return keypair

    async def set_policy(self, access_key: str, policy: str) -> Keypair:
        """Move a keypair to another resource policy (the caller checks it exists); its
        sessions keep the limits they were created with."""
        keypair = self.require(access_key)
        async with self._db.sessionmaker() as s, s.begin():
            await s.execute(
                update(KeypairRow).where(KeypairRow.access_key == access_key).values(resource_policy=policy)
            )
        keypair = replace(keypair, resource_policy=policy)
        self._cache[access_key] = keypair
        return keypair

    async def delete(self, access_key: str) -> None:
        self.require(access_key)
        async with self._db.sessionmaker() as s, s.begin():
            await s.execute(delete(KeypairRow).where(KeypairRow.access_key == access_key))
        del self._cache[access_key]
