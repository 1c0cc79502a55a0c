"""How tests wait: for the event they need (a status, a file, a line of output, a
process gone), never for a length of time.

``wait_for`` (threads, sync tests) and ``until`` (coroutines) poll a predicate until it
holds. Their timeout only bounds a hang: it is generous, never what a test measures, and
a test that runs out of it fails saying what it waited for. Where the code under test
offers an event to await (a stream's next message, an ``asyncio.Event``), await that
instead; where it reads a clock, drive the clock (tests/manual_clock.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: how long a wait may take before the test is taken to hang
HANG_S = 60.0
_POLL_S = 0.02


def wait_for(predicate: Callable[[], T], timeout: float = HANG_S, what: str = "") -> T:
    """Call ``predicate`` until it returns a true value, and return that value;
    AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what or _name(predicate)}")
        time.sleep(_POLL_S)
    return value


async def until(predicate: Callable[[], T], timeout: float = HANG_S, what: str = "") -> T:
    """``wait_for`` for a coroutine: the loop runs between polls."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what or _name(predicate)}")
        await asyncio.sleep(_POLL_S)
    return value


def _name(predicate: Callable[..., object]) -> str:
    code = getattr(predicate, "__code__", None)
    where = f" ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})" if code else ""
    return f"{getattr(predicate, '__qualname__', repr(predicate))}{where}"
