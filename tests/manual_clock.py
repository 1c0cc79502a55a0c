"""A clock that moves only when the test moves it, for the manager's ``Clock``
(bai.manager.clock): idle timeouts, lifetimes, keypair expiry and request dates are
tested by moving time, not by waiting for it.

``driving`` puts one into a running manager's clock for a block and takes it out at
the end; after ``advance``, ``reap`` runs the reaper's look at every session at once
(``SessionRegistry.reap``), since its timers were armed on the old time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bai.manager.clock import Clock

if TYPE_CHECKING:
    from tests.conftest import RunningServer


class ManualClock:
    """Both faces start at the system's now (so stamps made before it fits in stay
    comparable) and move together, by ``advance`` only."""

    def __init__(self) -> None:
        self._monotonic = time.monotonic()
        self._utc = datetime.now(UTC)

    def monotonic(self) -> float:
        return self._monotonic

    def utc(self) -> datetime:
        return self._utc

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._utc += timedelta(seconds=seconds)

    def as_clock(self) -> Clock:
        return Clock(utc=self.utc, monotonic=self.monotonic)


@contextmanager
def driving(clock: Clock, *, utc: bool = False) -> Iterator[ManualClock]:
    """A ManualClock in place of ``clock.monotonic`` (and with ``utc``, of ``clock.utc``:
    requests then are dated against it, so keep its advances within the allowed skew)
    for the block. A manager's clock is read from its own thread: each field is
    replaced in one assignment."""
    manual = ManualClock()
    saved = clock.utc, clock.monotonic
    clock.monotonic = manual.monotonic
    if utc:
        clock.utc = manual.utc
    try:
        yield manual
    finally:
        clock.utc, clock.monotonic = saved


def reap(running: RunningServer) -> list[str]:
    """The ids of the sessions the running manager's reaper finds past a limit now
    (being ended), from the server's own loop."""

    async def sweep() -> list[str]:
        return running.server.manager.sessions.reap()

    reaped: list[str] = running.call(sweep())
    return reaped


def nothing_in_flight(running: RunningServer, session_id: str) -> bool:
    """Whether the manager has seen every request and stream on the session end (the end
    of a stream reaches it after the client has closed): wait for it before moving the
    clock past an idle timeout that counts from then."""
    session = running.server.manager.sessions.state.find_by_id(session_id)
    return session is not None and session.activity.in_flight == 0
