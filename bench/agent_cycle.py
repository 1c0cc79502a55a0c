"""CPU per create + destroy cycle at the agent alone: ``bench.cycle_cpu`` without the
manager, the HTTP API, the store and the clients, so that the difference between the two
is what those cost.

    .venv/bin/python -m bench.agent_cycle [--cycles N] [--workers W] [--rounds R] [--pool-size P]

An ``Agent`` with the local backend runs in this process (its own agent id, so its
sessions' cgroups are counted apart from any other agent's), W tasks create and destroy
sessions in a loop (``Agent.create_session``, ``Agent.destroy_session``), and the CPU is
counted between two quiet points (the pool full before and after, so that each cycle
started one sandbox), as bench.cycle_cpu counts it:

- ``agent``: this process (the event loop, the worker threads), user and system;
- ``children``: the spawn helper and what it started and reaped (bwrap, the runner and its
  REPL child), over the living tree too;
- ``in_cgroups``: the part of ``children`` in the sessions' cgroups (bwrap, the runner,
  its REPL child), from the CPU accounting of the agent's cgroup parent.

Needs root, bubblewrap and writable cgroups (as the local backend does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import tempfile
import uuid
from pathlib import Path

from bai.agent.agent import Agent
from bai.agent.config import AgentConfig
from bai.common.agent_rpc import SandboxSpec
from bench.proctree import subtree_ms

PARTS = ("agent_user", "agent_sys", "children", "in_cgroups")


def cgroup_ms(agent_id: str) -> float:
    """CPU of every session of ``agent_id``, living or removed (cgroup v1 or v2), ms."""
    v1 = Path(f"/sys/fs/cgroup/cpuacct/bai/{agent_id}/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text()) / 1e6
    v2 = Path(f"/sys/fs/cgroup/bai/{agent_id}/cpu.stat")
    if v2.exists():
        usage = next(line for line in v2.read_text().splitlines() if line.startswith("usage_usec"))
        return int(usage.split()[1]) / 1e3
    return 0.0


def snapshot(agent_id: str) -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = (reaped.ru_utime + reaped.ru_stime) * 1000 + subtree_ms(os.getpid())
    return {
        "agent_user": own.ru_utime * 1000,
        "agent_sys": own.ru_stime * 1000,
        "children": children,
        "in_cgroups": cgroup_ms(agent_id),
    }


async def pool_full(agent: Agent, size: int) -> None:
    async with asyncio.timeout(30):
        while size and agent.info().pool.get("python", 0) < size:
            await asyncio.sleep(0.05)


async def cycles(agent: Agent, total: int, workers: int) -> float:
    async def worker(index: int) -> None:
        for _ in range(index, total, workers):
            spec = SandboxSpec(session_id=uuid.uuid4().hex, session_name="c", environment="python", resources={})
            await agent.create_session(spec)
            await agent.destroy_session(spec.session_id)

    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return loop.time() - started


def make_data_dir() -> Path:
    data_dir = Path(tempfile.mkdtemp(prefix="bai-agent-cycle-", dir="/tmp"))
    data_dir.chmod(0o711)  # sandboxes' uids traverse it to their scratch dirs
    return data_dir


async def one_round(n: int, workers: int, pool_size: int) -> dict[str, float]:
    data_dir = make_data_dir()
    agent_id = f"bench-{uuid.uuid4().hex[:8]}"
    config = AgentConfig(agent_id=agent_id, data_dir=data_dir, pool_size=pool_size)
    agent = Agent(config)
    await agent.start()
    try:
        await cycles(agent, 4, 2)  # warm
        await pool_full(agent, pool_size)
        await asyncio.sleep(0.5)  # the refills' last steps
        before = snapshot(agent_id)
        elapsed = await cycles(agent, n, workers)
        await pool_full(agent, pool_size)
        await asyncio.sleep(0.5)
        after = snapshot(agent_id)
    finally:
        await agent.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    out = {part: (after[part] - before[part]) / n for part in PARTS}
    out["rate"] = n / elapsed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=2)
    args = parser.parse_args()
    rounds = [asyncio.run(one_round(args.cycles, args.workers, args.pool_size)) for _ in range(args.rounds)]
    print(f"{args.cycles} cycles x {args.rounds} rounds, {args.workers} tasks, pool {args.pool_size}; "
          "ms of CPU per cycle (median of the rounds)")
    header = [*PARTS, "agent + children", "cycles/s"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    med = {part: statistics.median(r[part] for r in rounds) for part in PARTS}
    total = statistics.median(r["agent_user"] + r["agent_sys"] + r["children"] for r in rounds)
    rates = "/".join(f"{r['rate']:.1f}" for r in rounds)
    print("| " + " | ".join(f"{med[part]:.2f}" for part in PARTS) + f" | **{total:.2f}** | {rates} |")


if __name__ == "__main__":
    main()
