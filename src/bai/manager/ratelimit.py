"""A rolling-window request counter per access key (API.md section 4).

I/O free: fed the current time by the caller. Memory per key is bounded by the
key's limit (one timestamp per counted request in the window).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int


class RateLimiter:
    def __init__(self, window_s: float = 900.0) -> None:
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, limit: int, now: float) -> RateDecision:
        """Count one request for ``key`` at ``now`` unless it is over ``limit``."""
        hits = self._hits.setdefault(key, deque())
        horizon = now - self.window_s
        while hits and hits[0] <= horizon:
            hits.popleft()
        if len(hits) >= limit:
            return RateDecision(False, limit, 0)
        hits.append(now)
        return RateDecision(True, limit, limit - len(hits))
