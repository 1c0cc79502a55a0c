"""Usage figures in the Backend.AI stats shape (API.md section 5, "Destroy answers")."""

from __future__ import annotations

from typing import Any

from bai.common.agent_rpc import SessionStats


def _metric(current: int | str, unit: str, peak: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"current": str(current), "capacity": None, "pct": None, "unit_hint": unit}
    if peak is not None:
        out["stats.max"] = str(peak)
    return out


def stats_payload(stats: SessionStats, status: str) -> dict[str, Any]:
    """The ``stats`` object of a destroy answer and of ``lastStat``: decimal strings,
    with ``version`` and ``status``, which the official CLI needs."""
    mem = _metric(stats.mem_current, "bytes", peak=stats.mem_max)
    if stats.mem_limit is not None:
        mem["capacity"] = str(stats.mem_limit)
    cpu = _metric(stats.cpu_used_ms, "msec")
    if stats.cpu_limit is not None:
        cpu["capacity"] = stats.cpu_limit
    return {
        "version": 2,
        "status": status,
        "cpu_used": cpu,
        "mem": mem,
        "io_read": _metric(stats.io_read, "bytes"),
        "io_write": _metric(stats.io_write, "bytes"),
        "net_rx": _metric(stats.net_rx, "bytes"),
        "net_tx": _metric(stats.net_tx, "bytes"),
        "io_scratch_size": _metric(stats.io_scratch_size, "bytes"),
    }
