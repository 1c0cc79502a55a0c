"""Limits, accounting and teardown of sandboxes: memory, PIDs, CPU, stats, destroy,
hostile links, killing from inside, and a runner that dies; on both backends
(``[local]``, ``[docker]``). The tests that look at the local sandbox's own parts (bwrap's
child pid, the session's host uid, its cgroup and scratch attributes) are ``local_only``,
each with a ``docker_only`` variant at the end that checks the same on the container's
parts (the runner's pid, the container and session cgroups, the scratch disk)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_sandbox import (
    new_session,
    run,
    running_agent,
    sandbox_of,
    sandbox_unavailable,
    stderr_of,
    stdout_of,
)
from docker_sandbox import container_gone, processes_of

from bai.agent.agent import Agent
from bai.agent.backends.docker.sandbox import DockerSandbox
from bai.agent.backends.local.sandbox import LocalSandbox
from bai.common.agent_rpc import ExecRequest, SessionGone
from bai.common.errors import ExecutionFailed
from tests.capabilities import needs

REASON = sandbox_unavailable()
pytestmark = [pytest.mark.sandbox, needs("sandbox", REASON), pytest.mark.backends]


@pytest.fixture
async def agent(backend: str) -> AsyncIterator[Agent]:
    """A started agent on the test's backend (a docker one with no pool: each pooled
    container is a second start)."""
    async with running_agent(backend=backend, **({"pool_size": 0} if backend == "docker" else {})) as started:
        yield started


async def assert_works(agent: Agent, session_id: str) -> None:
    result = await run(agent, session_id, "print(6 * 7)")
    assert stdout_of(result) == "42\n", result


@pytest.mark.local_only(reason="asks bwrap's child pid whether the runner lived")
async def test_memory_limit_kills_the_users_process_and_says_so(agent: Agent) -> None:
    neighbour = await new_session(agent)
    session = await new_session(agent, resources={"mem": str(128 * 2**20)})
    result = await run(agent, session, "x = b'x' * (256 * 2**20)  # twice the limit\n")
    assert result.status == "finished"
    assert result.exit_code != 0
    assert "memory limit of 128 MiB" in stderr_of(result)
    stats = await agent.session_stats(session)
    assert stats.oom_kills >= 1
    assert stats.mem_limit == 128 * 2**20
    if session in agent.sessions and sandbox_of(agent, session).child_pid is not None:
        await assert_works(agent, session)  # the runner survived and restarted its REPL
    await assert_works(agent, neighbour)


async def test_oom_in_a_subprocess_is_reported_too(agent: Agent) -> None:
    session = await new_session(agent, resources={"mem": str(96 * 2**20)})
    result = await run(
        agent,
        session,
        "import subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-c', 'x = b\"y\" * (400 * 2**20)'])\n"
        "print('child status', p.returncode)\n",
    )
    assert "child status -9" in stdout_of(result)
    assert "memory limit of 96 MiB" in stderr_of(result)
    await assert_works(agent, session)


async def test_pid_limit_contains_a_fork_bomb(agent: Agent) -> None:
    neighbour = await new_session(agent)
    session = await new_session(agent, resources={"pids": "64"})
    sandbox = sandbox_of(agent, session)
    assert sandbox.cgroup is not None and sandbox.host.cgroups is not None
    result = await run(
        agent,
        session,
        "import os, subprocess\n"
        "bomb = subprocess.Popen(['/bin/sh', '-c', 'b() { b | b & }; b'])\n"
        "children = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            import time; time.sleep(30); os._exit(0)\n"
        "        children += 1\n"
        "except OSError as e:\n"
        "    print('fork failed', e.errno)\n"
        "print('children', children)\n",
        flush_timeout_s=5,
    )
    out = stdout_of(result)
    assert "fork failed 11" in out, (out, stderr_of(result))
    assert len(sandbox.host.cgroups.pids(sandbox.cgroup)) <= 64
    await assert_works(agent, neighbour)
    other = await new_session(agent)
    await assert_works(agent, other)
    dirs = list(sandbox.cgroup.dirs)
    if isinstance(sandbox, DockerSandbox):
        dirs += list(sandbox.parent.dirs) if sandbox.parent is not None else []
        await agent.destroy_session(session)
        assert await container_gone(sandbox.container_id)
    else:  # the bomb's processes, found by the session's own host uid
        uid = sandbox.uid
        await agent.destroy_session(session)
        assert uid is not None and not _owned_by(uid), "a process of the bomb survived"
    assert not any(path.exists() for path in dirs), "a cgroup of the bomb is left (a process survived)"
    await assert_works(agent, neighbour)


def _times_throttled(cgroup_dirs: list[Path]) -> int:
    """``nr_throttled`` of the session's cpu.stat (v2, or v1's cpu controller)."""
    for directory in cgroup_dirs:
        if (directory / "cpu.stat").exists():
            for line in (directory / "cpu.stat").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "nr_throttled":
                    return int(value)
    raise AssertionError(f"no nr_throttled in the cpu.stat of {cgroup_dirs}")


async def test_cpu_quota_half_a_core(agent: Agent) -> None:
    """The spin takes 0.6 s of CPU: the quota (50 ms a 100 ms period) stretches that over
    at least 1.1 s of wall time however idle the host, and the cgroup's own counter says it
    throttled the spin. No lower bound on the share: that would measure the host's load."""
    session = await new_session(agent, resources={"cpu": "0.5"})
    cgroup_dirs = sandbox_of(agent, session).cgroup.dirs
    throttled_before = _times_throttled(cgroup_dirs)
    before = await agent.session_stats(session)
    result = await run(
        agent,
        session,
        "import time\n"
        "t, c = time.monotonic(), time.process_time()\n"
        "while time.process_time() - c < 0.6:\n    pass\n"
        "print((time.process_time() - c) / (time.monotonic() - t))\n",
    )
    share = float(stdout_of(result))
    assert share <= 0.6, share  # 0.6 s in >= 1.1 s: at most 0.55
    assert _times_throttled(cgroup_dirs) > throttled_before
    after = await agent.session_stats(session)
    assert after.cpu_used_ms - before.cpu_used_ms >= 600  # the cgroup counted the spin
    assert after.cpu_limit == "0.5"


async def test_stats_grow_with_use(agent: Agent) -> None:
    session = await new_session(agent)
    before = await agent.session_stats(session)
    await run(
        agent,
        session,
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
        "import os\nwith open('/home/work/blob', 'wb') as f:\n"
        "    f.write(b'z' * 1_000_000); f.flush(); os.fsync(f.fileno())\n"
        "x = b'm' * (64 * 2**20)\n",
    )
    after = await agent.session_stats(session)
    assert after.cpu_used_ms >= before.cpu_used_ms + 250
    assert after.mem_max >= 64 * 2**20
    assert after.mem_current > 0
    assert after.io_scratch_size >= 1_000_000
    assert after.io_write >= 1_000_000  # fsync'ed: the bytes reached the disk from this cgroup
    assert after.mem_limit == 2**30 and after.cpu_limit == "1"


@pytest.mark.local_only(reason="the local cgroup, uid, scratch attributes")
async def test_destroy_removes_cgroup_and_scratch_and_returns_final_stats(agent: Agent) -> None:
    session = await new_session(agent)
    sandbox = sandbox_of(agent, session)
    await run(
        agent,
        session,
        "open('/home/work/f', 'w').write('x' * 5000)\nimport subprocess\nsubprocess.Popen(['sleep', '1000'])",
    )
    assert sandbox.cgroup is not None
    dirs = list(sandbox.cgroup.dirs)
    assert all(path.is_dir() for path in dirs)
    uid = sandbox.uid
    stats = await agent.destroy_session(session)
    assert 5000 <= stats.io_scratch_size <= 3 * 4096  # a capped scratch disk counts whole blocks
    assert stats.cpu_used_ms > 0 and stats.mem_max > 0
    assert not any(path.exists() for path in dirs)
    assert not sandbox.scratch.exists()
    assert session not in agent.sessions
    assert uid is not None
    assert not any(_owned_by(uid)), "a process of the sandbox survived"


def _owned_by(uid: int) -> list[int]:
    owned = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    owned.append(int(entry))
            except FileNotFoundError:
                pass
    return owned


async def test_planted_links_are_not_followed_by_stats_or_destroy(agent: Agent, tmp_path: Path) -> None:
    victim_dir = Path(f"/tmp/bai-victim-{uuid.uuid4().hex}")
    victim_dir.mkdir()
    victim = victim_dir / "secret.txt"
    victim.write_text("precious")
    victim.chmod(0o600)
    before = victim.stat()
    try:
        session = await new_session(agent)
        await run(
            agent,
            session,
            "import os\n"
            f"os.symlink('{victim}', '/home/work/file-link')\n"
            f"os.symlink('{victim_dir}', '/home/work/dir-link')\n"
            "os.symlink('/', '/home/work/root-link')\n"
            "os.mkdir('/home/work/d'); os.symlink('/etc', '/home/work/d/etc')\n",
        )
        stats = await agent.session_stats(session)
        assert stats.io_scratch_size <= 2 * 4096  # at most the dir's block (links are in their inodes)
        await agent.destroy_session(session)
        after = victim.stat()
        assert victim.read_text() == "precious"
        assert (after.st_uid, after.st_mode, after.st_mtime_ns) == (before.st_uid, before.st_mode, before.st_mtime_ns)
        assert victim_dir.is_dir()
    finally:
        victim.unlink()
        victim_dir.rmdir()


async def test_kill_everything_from_inside(agent: Agent) -> None:
    gone: list[SessionGone] = []

    async def on_gone(event: SessionGone) -> None:
        gone.append(event)

    agent.on_session_gone = on_gone
    session = await new_session(agent)
    result = await run(
        agent,
        session,
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'import os; os.kill(-1, 9)'])\n"
        "print('survived')\n",
    )
    assert result.status == "finished"
    if gone:
        assert gone[0].session_id == session
        with pytest.raises(ExecutionFailed):
            await run(agent, session, "print(1)")
    else:  # the runner (PID 1 of the sandbox) cannot be killed from inside: it restarted the REPL
        assert result.exit_code != 0
        await assert_works(agent, session)
    other = await new_session(agent)
    await assert_works(agent, other)
    await agent.destroy_session(session)


def runner_pid_of(sandbox: LocalSandbox | DockerSandbox) -> int:
    """The pid whose death is the runner's: bwrap's child (the sandbox's PID 1) on the local
    backend, the runner itself in a container."""
    pid = sandbox.runner_pid if isinstance(sandbox, DockerSandbox) else sandbox.child_pid
    assert pid is not None
    return pid


async def test_runner_death_fires_session_gone(agent: Agent) -> None:
    gone: asyncio.Queue[SessionGone] = asyncio.Queue()

    async def on_gone(event: SessionGone) -> None:
        await gone.put(event)

    agent.on_session_gone = on_gone
    session = await new_session(agent)
    sandbox = sandbox_of(agent, session)
    os.kill(runner_pid_of(sandbox), signal.SIGKILL)
    event = await asyncio.wait_for(gone.get(), 10)
    assert event.session_id == session
    assert event.reason
    with pytest.raises(ExecutionFailed):
        await agent.execute(ExecRequest(session_id=session, mode="query", code="1"))
    stats = await agent.destroy_session(session)
    assert stats.cpu_used_ms >= 0
    assert session not in agent.sessions
    if isinstance(sandbox, DockerSandbox):
        assert await container_gone(sandbox.container_id)


async def test_runner_death_ends_the_current_run(agent: Agent) -> None:
    session = await new_session(agent)
    sandbox = sandbox_of(agent, session)
    first = await agent.execute(
        ExecRequest(session_id=session, mode="query", code="import time; time.sleep(30)", flush_timeout_s=0.2)
    )
    assert first.status == "continued"
    os.kill(runner_pid_of(sandbox), signal.SIGKILL)
    last = await agent.execute(
        ExecRequest(session_id=session, mode="continue", run_id=first.run_id, flush_timeout_s=10)
    )
    assert last.status == "finished"
    assert last.exit_code != 0
    assert "[bai]" in "".join(str(data) for _, data in last.console)


@pytest.mark.local_only(reason="the local sandbox's scratch attribute")
async def test_stop_destroys_every_session() -> None:
    async with running_agent() as agent:
        first = await new_session(agent)
        await new_session(agent)
        sandbox = sandbox_of(agent, first)
        await agent.stop()
        assert agent.sessions == {}
        assert not sandbox.scratch.exists()


# -- the docker variants of the local_only tests -------------------------------


@pytest.mark.docker_only(reason="the local test's check, on the container's parts")
async def test_memory_limit_kills_the_users_process_and_says_so_in_a_container(agent: Agent) -> None:
    neighbour = await new_session(agent)
    session = await new_session(agent, resources={"mem": str(128 * 2**20)})
    result = await run(agent, session, "x = b'x' * (256 * 2**20)  # twice the limit\n")
    assert result.status == "finished"
    assert result.exit_code != 0
    assert "memory limit of 128 MiB" in stderr_of(result)
    stats = await agent.session_stats(session)
    assert stats.oom_kills >= 1
    assert stats.mem_limit == 128 * 2**20
    await assert_works(agent, session)  # the runner, PID 1 and shielded from the OOM killer, lived
    await assert_works(agent, neighbour)


@pytest.mark.docker_only(reason="the local test's check, on the container's parts")
async def test_destroy_removes_cgroup_and_scratch_and_returns_final_stats_in_a_container(agent: Agent) -> None:
    session = await new_session(agent)
    sandbox = sandbox_of(agent, session)
    await run(
        agent,
        session,
        "open('/home/work/f', 'w').write('x' * 5000)\nimport subprocess\nsubprocess.Popen(['sleep', '1000'])",
    )
    assert sandbox.cgroup is not None
    dirs = list(sandbox.cgroup.dirs) + (list(sandbox.parent.dirs) if sandbox.parent is not None else [])
    assert all(path.is_dir() for path in dirs)
    assert len(processes_of(sandbox.cgroup.dirs)) >= 2  # the runner, its REPL, the sleep
    stats = await agent.destroy_session(session)
    assert 5000 <= stats.io_scratch_size <= 3 * 4096  # a capped scratch disk counts whole blocks
    assert stats.cpu_used_ms > 0 and stats.mem_max > 0
    assert not any(path.exists() for path in dirs)
    assert not sandbox.scratch_disk.path.exists() and not sandbox.socket_dir.exists()
    assert session not in agent.sessions
    assert await container_gone(sandbox.container_id), "the container (and the sleep in it) survived"


@pytest.mark.docker_only(reason="the local test's check, on the container's parts")
async def test_stop_destroys_every_session_in_a_container(backend: str) -> None:
    async with running_agent(backend=backend, pool_size=0) as agent:
        first = await new_session(agent)
        await new_session(agent)
        sandboxes = [sandbox_of(agent, session) for session in agent.sessions]
        await agent.stop()
        assert agent.sessions == {}
        for sandbox in sandboxes:
            assert not sandbox.scratch_disk.path.exists()
            assert await container_gone(sandbox.container_id)
        assert first not in agent.backend.sandboxes  # type: ignore[attr-defined]
