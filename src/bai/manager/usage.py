"""Usage figures in the Backend.AI stats shape (API.md section 5, "Destroy answers")."""

from __future__ import annotations

from typing import Any

from bai.common.agent_rpc import SessionStats
from bai.common.wire import StatMetric, UsageStats


def _bytes(current: int, peak: int | None = None, capacity: int | None = None) -> StatMetric:
    return StatMetric(
        current=str(current),
        unit_hint="bytes",
        stats_max=None if peak is None else str(peak),
        capacity=None if capacity is None else str(capacity),
    )


def usage(stats: SessionStats, status: str) -> UsageStats:
    return UsageStats(
        status=status,
        cpu_used=StatMetric(current=str(stats.cpu_used_ms), unit_hint="msec", capacity=stats.cpu_limit),
        mem=_bytes(stats.mem_current, peak=stats.mem_max, capacity=stats.mem_limit),
        io_read=_bytes(stats.io_read),
        io_write=_bytes(stats.io_write),
        net_rx=_bytes(stats.net_rx),
        net_tx=_bytes(stats.net_tx),
        io_scratch_size=_bytes(stats.io_scratch_size),
    )


def stats_payload(stats: SessionStats, status: str) -> dict[str, Any]:
    """The JSON object itself, as stored with the session and sent on the wire."""
    return usage(stats, status).model_dump(by_alias=True, exclude_none=True)
