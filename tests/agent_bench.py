"""Measure the agent's two fast paths with real sandboxes (run as root):

- create → runner Ready (``Agent.create_session``), p50 / p99;
- ``execute("1+1")`` on a warm session, and the part of it the agent itself adds:
  the time from the call to the Execute frame being written, plus the time from
  the Finished frame's arrival to the call's return.

    .venv/bin/python tests/agent_bench.py [CREATES] [EXECUTES]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_sandbox import running_agent, spec

from bai.agent import session as session_module
from bai.common.agent_rpc import ExecRequest
from bai.runner import protocol


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3


async def bench(creates: int, executes: int) -> None:
    async with running_agent() as agent:
        times = []
        for _ in range(creates):
            one = spec()
            started = time.perf_counter()
            await agent.create_session(one)
            times.append(time.perf_counter() - started)
            await agent.destroy_session(one.session_id)
        print(f"create -> Ready: p50 {pct(times, 0.5):.1f} ms, p99 {pct(times, 0.99):.1f} ms (n={creates})")

        one = spec()
        await agent.create_session(one)
        marks: dict[str, float] = {}
        original_send = session_module.RunnerConnection.send
        original_dispatch = session_module.Session.dispatch

        def send(self: Any, message: protocol.Message) -> None:
            marks["sent"] = time.perf_counter()
            original_send(self, message)

        def dispatch(self: Any, connection: Any, message: protocol.Message) -> None:
            if isinstance(message, protocol.Finished):
                marks["finished"] = time.perf_counter()
            original_dispatch(self, connection, message)

        session_module.RunnerConnection.send = send  # type: ignore[method-assign]
        session_module.Session.dispatch = dispatch  # type: ignore[method-assign]
        request = ExecRequest(session_id=one.session_id, mode="query", code="1+1")
        totals, added = [], []
        for i in range(executes + 50):
            started = time.perf_counter()
            await agent.execute(request)
            ended = time.perf_counter()
            if i >= 50:
                totals.append(ended - started)
                added.append((marks["sent"] - started) + (ended - marks["finished"]))
        print(
            f"execute 1+1: p50 {pct(totals, 0.5):.3f} ms, p99 {pct(totals, 0.99):.3f} ms; "
            f"added by the agent: p50 {pct(added, 0.5) * 1e3:.0f} us, mean {statistics.mean(added) * 1e6:.0f} us"
        )


if __name__ == "__main__":
    asyncio.run(bench(int(sys.argv[1]) if len(sys.argv) > 1 else 50, int(sys.argv[2]) if len(sys.argv) > 2 else 1000))
