"""The local backend's limit, accounting, teardown and isolation tests at the agent run
again on the docker backend: the test functions of ``test_sandbox_limits`` (OOM in a
subprocess, CPU quota, stats, planted links against stats and destroy, killing
everything from inside) and ``test_sandbox_isolation`` (no network, a private /tmp, the
agent's environment, bad variable names, no user namespaces nor privileges), with this
module's ``agent`` fixture: a started agent on the docker backend. Those that look at the
local sandbox's own parts (bwrap's child pid, the per-session host uid, its cgroup and
scratch dir attributes, the host's trimmed root) have docker variants below that check
the same behaviour on the container's parts. Skipped with the reason where Docker or the
image is missing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from agent_sandbox import new_session, run, stderr_of, stdout_of
from docker_sandbox import container_of, docker_agent, docker_unavailable, running_docker_agent, share

from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from bai.common.agent_rpc import ExecRequest, SessionGone
from bai.common.errors import ExecutionFailed
from tests.capabilities import needs

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]

# each has a variant below, "..._in_a_container", that checks the same on the container's parts
LOCAL_ONLY_LIMITS = {
    "test_memory_limit_kills_the_users_process_and_says_so": "asks bwrap's child pid whether the runner lived",
    "test_pid_limit_contains_a_fork_bomb": "looks for the bomb's processes by the session's own host uid",
    "test_destroy_removes_cgroup_and_scratch_and_returns_final_stats": "the local cgroup, uid, scratch attributes",
    "test_runner_death_fires_session_gone": "kills bwrap's child pid",
    "test_runner_death_ends_the_current_run": "kills bwrap's child pid",
    "test_stop_destroys_every_session": "the local sandbox's scratch attribute",
}
LOCAL_ONLY_ISOLATION = {
    "test_host_file_system_is_read_only_and_trimmed": "the host's trimmed root; a container shows its image's",
    "test_only_home_work_is_written_to_the_host": "the session's own host uid (a container runs as the image's)",
    "test_identity_inside_and_on_the_host": "the session's own host uid, bwrap's processes",
    "test_runner_holds_no_host_file": "bwrap's child pid",
    "test_environment_holds_nothing_of_the_agent": "Docker sets HOSTNAME (the container's, \"sandbox\")",
}

HERE = Path(__file__).parent
PATCH = {"running_agent": running_docker_agent, "sandbox_of": container_of}
LIMITS = share(HERE / "test_sandbox_limits.py", globals(), local_only=LOCAL_ONLY_LIMITS, patch=PATCH)
ISOLATION = share(HERE / "test_sandbox_isolation.py", globals(), local_only=LOCAL_ONLY_ISOLATION, patch=PATCH)


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    async with docker_agent() as started:
        yield started


async def container_gone(container_id: str) -> bool:
    docker = aiodocker.Docker()
    try:
        await docker.containers.get(container_id)
    except aiodocker.DockerError as exc:
        return exc.status == 404
    finally:
        await docker.close()
    return False


def processes_of(cgroup_dirs: list[Path]) -> list[int]:
    """The pids in a cgroup (v1: of its first controller; v2: the one dir), [] once it is gone."""
    try:
        return [int(pid) for pid in (cgroup_dirs[0] / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


# -- test_sandbox_limits ---------------------------------------------------------------


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
    await LIMITS.assert_works(agent, session)  # the runner, PID 1 and shielded from the OOM killer, lived
    await LIMITS.assert_works(agent, neighbour)


async def test_pid_limit_contains_a_fork_bomb_in_a_container(agent: Agent) -> None:
    neighbour = await new_session(agent)
    session = await new_session(agent, resources={"pids": "64"})
    sandbox = container_of(agent, session)
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
    await LIMITS.assert_works(agent, neighbour)
    other = await new_session(agent)
    await LIMITS.assert_works(agent, other)
    dirs = list(sandbox.cgroup.dirs) + (list(sandbox.parent.dirs) if sandbox.parent is not None else [])
    await agent.destroy_session(session)
    assert await container_gone(sandbox.container_id)
    assert not any(path.exists() for path in dirs), "a cgroup of the bomb is left (a process survived)"
    await LIMITS.assert_works(agent, neighbour)


async def test_destroy_removes_cgroup_and_scratch_and_returns_final_stats_in_a_container(agent: Agent) -> None:
    session = await new_session(agent)
    sandbox = container_of(agent, session)
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


async def test_runner_death_fires_session_gone_in_a_container(agent: Agent) -> None:
    gone: asyncio.Queue[SessionGone] = asyncio.Queue()

    async def on_gone(event: SessionGone) -> None:
        await gone.put(event)

    agent.on_session_gone = on_gone
    session = await new_session(agent)
    sandbox = container_of(agent, session)
    assert sandbox.runner_pid is not None
    os.kill(sandbox.runner_pid, signal.SIGKILL)
    event = await asyncio.wait_for(gone.get(), 10)
    assert event.session_id == session
    assert event.reason
    with pytest.raises(ExecutionFailed):
        await agent.execute(ExecRequest(session_id=session, mode="query", code="1"))
    stats = await agent.destroy_session(session)
    assert stats.cpu_used_ms >= 0
    assert session not in agent.sessions
    assert await container_gone(sandbox.container_id)


async def test_runner_death_ends_the_current_run_in_a_container(agent: Agent) -> None:
    session = await new_session(agent)
    sandbox = container_of(agent, session)
    first = await agent.execute(
        ExecRequest(session_id=session, mode="query", code="import time; time.sleep(30)", flush_timeout_s=0.2)
    )
    assert first.status == "continued"
    assert sandbox.runner_pid is not None
    os.kill(sandbox.runner_pid, signal.SIGKILL)
    last = await agent.execute(
        ExecRequest(session_id=session, mode="continue", run_id=first.run_id, flush_timeout_s=10)
    )
    assert last.status == "finished"
    assert last.exit_code != 0
    assert "[bai]" in "".join(str(data) for _, data in last.console)


async def test_stop_destroys_every_session_in_a_container() -> None:
    async with docker_agent() as agent:
        first = await new_session(agent)
        await new_session(agent)
        sandboxes = [container_of(agent, session) for session in agent.sessions]
        await agent.stop()
        assert agent.sessions == {}
        for sandbox in sandboxes:
            assert not sandbox.scratch_disk.path.exists()
            assert await container_gone(sandbox.container_id)
        assert first not in agent.backend.sandboxes  # type: ignore[attr-defined]


# -- test_sandbox_isolation --------------------------------------------------------------


async def test_host_file_system_is_out_of_reach_and_the_root_read_only_in_a_container(agent: Agent) -> None:
    """The image's own root (its /etc, /root, /var) is what the container sees: the probes
    are the host's paths the local test probes that an image does not have."""
    session = await new_session(agent)
    assert isinstance(agent.backend, DockerBackend)
    probes = [
        "/work", str(agent.config.data_dir), str(agent.backend.root), str(agent.backend.socket_root),
        "/var/lib/docker", "/run/docker.sock", "/var/run/docker.sock", "/etc/ssl/private/ssl-cert-snakeoil.key",
    ]  # fmt: skip
    code = (
        "import os, json\n"
        f"probes = {json.dumps(probes)}\n"
        "seen = {p: os.path.lexists(p) for p in probes}\n"
        "writes = {}\n"
        "for p in ['/usr/x', '/etc/x', '/x', '/opt/x', '/opt/bai/bai/runner/x', '/bin/x',\n"
        "          '/proc/x', '/home/x', '/dev/x', '/root/x', '/var/x', '/run/bai/x']:\n"
        "    try:\n        open(p, 'w').close(); writes[p] = 'written'\n"
        "    except OSError as e:\n        writes[p] = e.errno\n"
        "print(json.dumps({'seen': seen, 'writes': writes, 'home': os.listdir('/home')}))\n"
    )
    report = json.loads(await ISOLATION.inside(agent, session, code))
    assert not any(report["seen"].values()), report["seen"]
    assert all(value != "written" for value in report["writes"].values()), report["writes"]
    assert report["home"] == ["work"]


async def test_only_home_work_is_written_to_the_host_in_a_container(agent: Agent) -> None:
    session = await new_session(agent)
    out = await ISOLATION.inside(
        agent, session, "open('/home/work/out.txt', 'w').write('hello')\nimport os\nprint(os.getcwd())\n"
    )
    assert out == "/home/work\n"
    sandbox = container_of(agent, session)
    scratch = sandbox.scratch_disk.path
    host_file = scratch / "out.txt"
    assert host_file.read_text() == "hello"
    uid = sandbox.container_spec.uid  # the session's own host uid (docs/docker-backend.md)
    assert uid is not None and uid != sandbox.container_spec.image.uid
    assert host_file.stat().st_uid == uid and scratch.stat().st_uid == uid
    assert scratch.stat().st_mode & 0o777 == 0o700


async def test_identity_inside_and_on_the_host_in_a_container(agent: Agent) -> None:
    session = await new_session(agent)
    out = await ISOLATION.inside(
        agent,
        session,
        "import os, pwd\nprint(os.getuid(), os.getgid(), os.getpid(), pwd.getpwuid(os.getuid()).pw_name)\n",
    )
    uid, gid, pid, name = out.split()
    sandbox = container_of(agent, session)
    assert (uid, gid, name) == (str(sandbox.container_spec.uid), uid, "work")  # its own uid, the image's name
    assert int(uid) >= agent.config.sandbox_uid_base
    assert int(pid) < 50  # its own PID namespace
    assert sandbox.cgroup is not None and sandbox.host.cgroups is not None
    pids = sandbox.host.cgroups.pids(sandbox.cgroup)
    assert sandbox.runner_pid in pids
    assert len(pids) >= 2  # the runner, the REPL
    for pid_ in pids:
        status = Path(f"/proc/{pid_}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [uid] * 4, (pid_, uids)  # no user namespace: the same uid on the host


async def test_runner_holds_no_host_file_in_a_container(agent: Agent) -> None:
    session = await new_session(agent)
    sandbox = container_of(agent, session)
    assert sandbox.runner_pid is not None
    seen: dict[str, Any] = {}
    for fd in os.listdir(f"/proc/{sandbox.runner_pid}/fd"):
        target = os.readlink(f"/proc/{sandbox.runner_pid}/fd/{fd}")
        seen[fd] = target
        assert target.startswith(("socket:", "pipe:", "anon_inode:", "/dev/null")), (fd, target)
    assert any(target.startswith("socket:") for target in seen.values()), seen  # the agent's


async def test_environment_holds_nothing_of_the_agent_in_a_container(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the local test, but Docker puts HOSTNAME (the container's hostname) in every
    container's environment; it cannot be unset, and it says nothing of the agent. USER and
    LOGNAME name the image's user, whose uid is the session's own (a number with no name
    on the host)."""
    monkeypatch.setenv("BAI_TEST_SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    session = await new_session(agent, environ={"GREETING": "hi there", "PYTHONHASHSEED": "0"})
    env = json.loads(await ISOLATION.inside(agent, session, "import os, json; print(json.dumps(dict(os.environ)))"))
    assert "hunter2" not in json.dumps(env) and "also-secret" not in json.dumps(env)
    assert env["GREETING"] == "hi there" and env["HOSTNAME"] == "sandbox"
    assert env["HOME"] == "/home/work" and env["LANG"] == "C.UTF-8" and env["PYTHONUNBUFFERED"] == "1"
    assert env["USER"] == env["LOGNAME"] == "work"
    allowed = {"PATH", "HOME", "LANG", "TERM", "PYTHONUNBUFFERED", "GREETING", "PYTHONHASHSEED", "PWD", "HOSTNAME",
               "USER", "LOGNAME"}  # fmt: skip
    assert not {k for k in env if k not in allowed and not k.startswith(("PYTHON", "BAI_RUNNER", "MPL"))}
