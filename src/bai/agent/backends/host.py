"""What the local and the docker backend both do on the host: their schedulable slots,
the GPUs they offer, byte-compiling the runner once, and shielding the runner from the
OOM killer. Callers: bai.agent.backends.local.backend, local_sandbox, docker, docker_sandbox."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

from bai.agent import gpu
from bai.agent.cgroups import CgroupStats, Limits
from bai.agent.config import AgentConfig
from bai.agent.gpu import GpuError, GpuInventory
from bai.agent.scratch import Scratch, ScratchDisks
from bai.common.agent_rpc import SessionStats

log = logging.getLogger(__name__)


def meminfo_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def host_slots(gpus: GpuInventory) -> dict[str, Decimal]:
    """The hardware a backend offers: cores, memory, and its GPUs as ``cuda.device``."""
    slots = {"cpu": Decimal(os.cpu_count() or 1), "mem": Decimal(meminfo_total())}
    if gpus.devices:
        slots["cuda.device"] = Decimal(len(gpus.devices))
    return slots


def find_gpus(config: AgentConfig, fake_dir: Path) -> GpuInventory:
    """The GPUs the agent offers: none when ``gpus`` is off or discovery fails (logged);
    a fake inventory's nodes go to ``fake_dir`` (where its sandboxes can reach them)."""
    if config.gpus == "off":
        return GpuInventory((), Path("/dev"))
    try:
        inventory = gpu.discover(config.fake_gpus, fake_dir)
    except (OSError, GpuError) as exc:
        log.warning("no GPUs offered: %s", exc)
        return GpuInventory((), Path("/dev"))
    for device in inventory.devices:
        log.info("GPU %d: %s (%s, %d MiB)", device.index, device.name, device.uuid, device.memory // 2**20)
    return inventory


async def precompile_runner(python: str, runner_dir: Path) -> None:
    """Byte-compile the runner for the sandboxes' interpreter, once, on the host: inside,
    the runner's dir is read-only, so without this every session start would compile
    it from source (~30 ms)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            python, "-m", "compileall", "-q", str(runner_dir),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:  # a missing interpreter is reported when a session starts
        log.warning("could not byte-compile the runner with %s: %s", python, exc)
        return
    _, err = await proc.communicate()
    if proc.returncode != 0:
        log.warning("could not byte-compile the runner (%s): %s", runner_dir, err.decode(errors="replace"))


def protect_from_oom(pids: Iterable[int | None]) -> None:
    """``oom_score_adj = -1000`` for the runner's processes: the OOM killer takes the
    user's instead. A pid that is gone, or an agent that is not root, is let be."""
    for pid in pids:
        if pid is None:
            continue
        try:
            with open(f"/proc/{pid}/oom_score_adj", "w") as f:
                f.write("-1000")
        except OSError as exc:
            log.debug("cannot protect pid %s from the OOM killer: %s", pid, exc)


async def scratch_usage(disks: ScratchDisks, scratch: Scratch) -> int:
    """Bytes a session stored in its /home/work: one fstatvfs of a mounted disk, inline;
    a walk of a plain dir, in a worker thread."""
    if scratch.mounted:
        return disks.usage(scratch)
    return await asyncio.to_thread(disks.usage, scratch)


def usage_of(figures: CgroupStats, limits: Limits, session_peak: int, scratch: int, oom_kills: int) -> SessionStats:
    """A sandbox's SessionStats from its cgroup's figures. ``session_peak``: the memory peak
    the per-run meter kept (each run's start resets the kernel's on v1)."""
    return SessionStats(
        cpu_used_ms=figures.cpu_used_ms,
        mem_current=figures.mem_current,
        mem_max=max(figures.mem_peak, session_peak),
        mem_limit=limits.mem,
        cpu_limit=format(limits.cpu.normalize(), "f"),
        io_read=figures.io_read,
        io_write=figures.io_write,
        io_scratch_size=scratch,
        oom_kills=max(figures.oom_kills, oom_kills),
    )
