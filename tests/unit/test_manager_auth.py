"""Keypair expiry at authentication, on a clock the test drives (no sleeps): the
registry stamps and checks new keypairs with its injected clock, and ``authenticate``
judges a request at the ``now`` its caller hands in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bai.common.errors import AuthFailed, InvalidRequest
from bai.common.signing import signed_headers
from bai.manager.auth import SignedRequest, authenticate
from bai.manager.clock import Clock as ManagerClock
from bai.manager.keypairs import Keypair, KeypairRegistry
from bai.manager.store.db import Database

VERSION = "v8.20240915"
SKEW_S = 900.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'manager.sqlite3'}")
    await db.migrate()
    yield db
    await db.close()


def signed_at(keypair: Keypair, now: datetime) -> SignedRequest:
    headers = signed_headers(
        access_key=keypair.access_key, secret_key=keypair.secret_key, api_version=VERSION,
        method="POST", path_with_query="/auth/test", host="bai.test", content_type=None, now=now,
    )
    lower = {name.lower(): value for name, value in headers.items()}
    return SignedRequest(method="POST", raw_path="/auth/test", headers={"host": "bai.test", **lower}, body=b"")


async def test_a_keypair_works_until_its_expiry_and_is_refused_from_then_on(database: Database) -> None:
    clock = Clock()
    keypairs = KeypairRegistry(database, clock=ManagerClock(utc=clock))
    keypair = await keypairs.create(
        user_id="short-lived", is_admin=False, concurrency_limit=1, rate_limit=10,
        expires_at=clock() + timedelta(seconds=1.5),
    )
    assert keypair.created_at == clock()
    assert authenticate(signed_at(keypair, clock()), keypairs, clock(), SKEW_S) == keypair
    clock.advance(1.4)
    assert authenticate(signed_at(keypair, clock()), keypairs, clock(), SKEW_S) == keypair
    clock.advance(0.1)  # the expiry itself: refused
    with pytest.raises(AuthFailed, match="expired"):
        authenticate(signed_at(keypair, clock()), keypairs, clock(), SKEW_S)
    clock.advance(3600)
    with pytest.raises(AuthFailed, match="expired"):
        authenticate(signed_at(keypair, clock()), keypairs, clock(), SKEW_S)


async def test_an_expiry_must_lie_after_the_registrys_now(database: Database) -> None:
    clock = Clock()
    keypairs = KeypairRegistry(database, clock=ManagerClock(utc=clock))
    for expires_at in (clock(), clock() - timedelta(days=1)):
        with pytest.raises(InvalidRequest) as caught:
            await keypairs.create(user_id="u", is_admin=False, concurrency_limit=1, rate_limit=1,
                                  expires_at=expires_at)
        assert caught.value.field == "expires_at"
    # a moment after it is fine, though the real clock is years before it
    later = await keypairs.create(user_id="u", is_admin=False, concurrency_limit=1, rate_limit=1,
                                  expires_at=clock() + timedelta(microseconds=1))
    assert later.expires_at == clock() + timedelta(microseconds=1)
