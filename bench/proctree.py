"""CPU time of a process and everything below it, from /proc: what the CPU-per-cycle
benchmarks (bench.cycle_cpu, bench.agent_cycle, bench.run's sustained figure) count.

A process's descendants are counted as each living one's own time plus what it reaped
(cutime + cstime), over the living tree (/proc/<pid>/task/*/children), so that a process
reaped between two readings is counted once, in its parent.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def proc_times(pid: int) -> tuple[float, float, float]:
    """(user, system, reaped children's user + system) of ``pid``, ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return utime * TICK_MS, stime * TICK_MS, (cutime + cstime) * TICK_MS


def child_pids(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(p) for p in (task / "children").read_text().split()]
    except FileNotFoundError:  # it ended meanwhile
        pass
    return out


def subtree_ms(pid: int) -> float:
    """The CPU of ``pid``'s living descendants and what they reaped, ms."""
    total = 0.0
    for child in child_pids(pid):
        try:
            user, system, reaped = proc_times(child)
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += user + system + reaped + subtree_ms(child)
    return total


def tree_ms(pid: int) -> float:
    """``pid``'s own CPU, what it reaped, and its living descendants', ms."""
    user, system, reaped = proc_times(pid)
    return user + system + reaped + subtree_ms(pid)


def machine_busy_ms() -> float:
    """Every CPU's busy time since boot (/proc/stat, all but idle and iowait), ms."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) * TICK_MS
