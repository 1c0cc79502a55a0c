"""``Clock``: the manager's one source of time.

``Manager`` makes one and hands the same object to every part that asks the time: the
API edge (a request's Date against ``utc``, the rate limiter's window on ``monotonic``),
``KeypairRegistry`` (keypairs' creation and expiry), ``SessionStates`` (sessions'
creation and termination stamps) and the ``Reaper`` (idle time and lifetime on
``monotonic``). The parts keep the object, not its functions, and call it at each use,
so replacing a field of a running manager's clock moves the time of all of them at
once: that is how tests drive it (tests/manual_clock.py), with no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Clock:
    #: what is dated: aware UTC datetimes
    utc: Callable[[], datetime] = utc_now
    #: what is timed: ``time.monotonic()`` seconds
    monotonic: Callable[[], float] = time.monotonic
