"""Idle timeout and maximum lifetime: which running sessions to end, and when.

``Activity`` is what the request path writes (a counter and a timestamp, nothing
else, stamped with the time its caller reads off the manager's clock); ``verdict`` is
the I/O-free decision; ``Reaper`` is the thin shell, one ``loop.call_later`` timer per
watched session, each deadline read on the manager's ``Clock.monotonic``. Activity moves
no timer: a timer that fires early for a session used since looks again at the new
deadline. A clock moved by hand (a test's) moves no timer either: ``sweep`` looks at
every watched session at once.

A session is idle when no request acts on it (execute, complete, interrupt,
restart), no streaming WebSocket is open on it, and no run is in progress. The
manager learns that a run goes on from a ``continued`` answer and that it ended
from the next final answer, an interrupt or a restart; a run whose client stops
asking is taken to have ended at most ``exec_timeout_s`` (plus a grace) after it
was last seen going on, or never, without an exec timeout. A run blocked in
``input()`` is waiting for the user, who is idle: it does not count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from bai.common.limits import SessionLimits
from bai.manager.clock import Clock

IDLE_TIMEOUT = "idle-timeout"
MAX_LIFETIME = "max-lifetime-reached"
#: how long past its exec timeout a run unseen since is still taken to go on
RUN_GRACE_S = 5.0


@dataclass
class Activity:
    """Times are the manager's ``Clock.monotonic()`` seconds, handed in by the caller
    (SessionRegistry, which holds the clock)."""

    last: float = 0.0
    in_flight: int = 0
    #: a run is in progress (a ``continued`` answer was the last seen) until this time
    run_until: float | None = None

    def touch(self, now: float) -> None:
        self.last = now

    def enter(self, now: float) -> None:
        self.in_flight += 1
        self.last = now

    def leave(self, now: float) -> None:
        self.in_flight -= 1
        self.last = now

    def run_continues(self, exec_timeout_s: float | None) -> None:
        if self.run_until is None:
            self.run_until = self.last + exec_timeout_s + RUN_GRACE_S if exec_timeout_s else float("inf")

    def run_ended(self, now: float) -> None:
        self.run_until = None
        self.last = now

    def quiet_since(self, now: float) -> float | None:
        """Since when the session has been idle; None while it is in use."""
        if self.in_flight > 0:
            return None
        if self.run_until is None:
            return self.last
        return None if now < self.run_until else max(self.last, self.run_until)


def verdict(activity: Activity, limits: SessionLimits, started: float, now: float) -> str | float | None:
    """The reason to end the session now, else when to look again (None: never)."""
    times: list[float] = []
    if limits.max_lifetime_s is not None:
        end = started + limits.max_lifetime_s
        if now >= end:
            return MAX_LIFETIME
        times.append(end)
    if limits.idle_timeout_s is not None:
        quiet = activity.quiet_since(now)
        if quiet is None:
            times.append(now + limits.idle_timeout_s)  # in use: it cannot be idle sooner
        elif now >= quiet + limits.idle_timeout_s:
            return IDLE_TIMEOUT
        else:
            times.append(quiet + limits.idle_timeout_s)
    return min(times, default=None)


@dataclass
class _Watched:
    activity: Activity
    limits: SessionLimits
    started: float
    timer: asyncio.TimerHandle | None = None


class Reaper:
    """Calls ``on_expired(session_id, reason)`` when a watched session passes a limit; the
    caller ends the session (and calls ``forget``). Used by SessionRegistry only, with the
    manager's clock (whose ``monotonic`` stamps the sessions' ``Activity`` too)."""

    def __init__(self, on_expired: Callable[[str, str], None], clock: Clock | None = None) -> None:
        self._on_expired = on_expired
        self._clock = clock or Clock()
        self._watched: dict[str, _Watched] = {}

    def watch(self, session_id: str, activity: Activity, limits: SessionLimits, started: float | None = None) -> None:
        """Start watching a running session; its lifetime counts from ``started`` (a
        ``Clock.monotonic()`` value), by default now: it has just started."""
        if limits.idle_timeout_s is None and limits.max_lifetime_s is None:
            return
        self.forget(session_id)
        started = self._clock.monotonic() if started is None else started
        self._watched[session_id] = watched = _Watched(activity, limits, started)
        self._check(session_id, watched)

    def forget(self, session_id: str) -> None:
        watched = self._watched.pop(session_id, None)
        if watched is not None and watched.timer is not None:
            watched.timer.cancel()

    def close(self) -> None:
        for session_id in list(self._watched):
            self.forget(session_id)

    def expired(self, session_id: str) -> str | None:
        """The limit a watched session is past now, if any (checked again just before ending it)."""
        watched = self._watched.get(session_id)
        if watched is None:
            return None
        decision = verdict(watched.activity, watched.limits, watched.started, self._clock.monotonic())
        return decision if isinstance(decision, str) else None

    def recheck(self, session_id: str) -> None:
        """Arm the timer of a session found not to be past its limits after all."""
        watched = self._watched.get(session_id)
        if watched is not None and watched.timer is None:
            self._check(session_id, watched)

    def sweep(self) -> list[str]:
        """Look at every watched session now, as its timer does at its deadline, and return
        those found past a limit (each handed to ``on_expired``, once: it is no longer
        timed). For whoever moved the clock by hand, whose timers were armed on the old
        time (the tests' ManualClock); the timers alone need no sweep."""
        expired: list[str] = []
        for session_id, watched in list(self._watched.items()):
            if watched.timer is None:
                continue  # handed to on_expired already, or being looked at now
            watched.timer.cancel()
            if self._check(session_id, watched) is not None:
                expired.append(session_id)
        return expired

    def _check(self, session_id: str, watched: _Watched) -> str | None:
        """Hand the session to ``on_expired`` and return the reason if it is past a limit,
        else arm its timer for the next deadline."""
        watched.timer = None
        if self._watched.get(session_id) is not watched:
            return None
        now = self._clock.monotonic()
        decision = verdict(watched.activity, watched.limits, watched.started, now)
        if isinstance(decision, str):
            self._on_expired(session_id, decision)
            return decision
        if decision is not None:
            loop = asyncio.get_running_loop()
            watched.timer = loop.call_later(max(0.0, decision - now), self._check, session_id, watched)
        return None
