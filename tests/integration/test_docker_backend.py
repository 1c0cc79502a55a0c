"""The docker backend (bai.agent.backends.docker.backend) against a real engine and the
``bai/python:3.11`` image: the local backend's session, execution, limit and
hostile-code checks on containers, how each container is set up, accounting,
restart, the pool's claim, reconciliation at start, and a session through the API.
Skipped with the reason where no engine answers or the image is missing."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import pytest
from agent_sandbox import make_config, new_session, run, stderr_of, stdout_of
from docker_sandbox import IMAGE, container_of, docker_agent, docker_unavailable

from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.docker.container import LABEL_AGENT, LABEL_DATA_DIR, LABEL_SESSION
from bai.common.agent_rpc import ExecRequest
from bai.common.errors import InvalidRequest, SessionCreationFailed
from tests.apiclient import SignedClient
from tests.capabilities import needs
from tests.waiting import until

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    async with docker_agent() as started:
        yield started


@pytest.fixture
async def session(agent: Agent) -> str:
    return await new_session(agent)


def query(session_id: str, code: str, flush: float = 10.0) -> ExecRequest:
    return ExecRequest(session_id=session_id, mode="query", code=code, flush_timeout_s=flush)


async def inspect(container_id: str) -> dict[str, Any]:
    docker = aiodocker.Docker()
    try:
        info: dict[str, Any] = await docker._query_json(f"containers/{container_id}/json")
        return info
    finally:
        await docker.close()


async def test_a_session_runs_and_keeps_its_state(agent: Agent, session: str) -> None:
    first = await agent.execute(query(session, "x = 41"))
    assert (first.status, first.exit_code) == ("finished", 0)
    second = await agent.execute(query(session, "import os\nprint(x + 1, os.getcwd())"))
    assert stdout_of(second) == "42 /home/work\n"


async def test_each_container_runs_as_a_host_uid_of_its_own(agent: Agent) -> None:
    """Not the image's uid 1000 (often a person's account on the host): one uid of the agent's
    range per session, named as the image's user inside, owning the session's /home/work."""
    first, second = await new_session(agent), await new_session(agent)
    code = (
        "import os, pwd, getpass, subprocess\n"
        "print(os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name, getpass.getuser())\n"
        "print(os.stat('/home/work').st_uid == os.getuid(), subprocess.run(['whoami'], capture_output=True,"
        " text=True).stdout.strip(), subprocess.run(['id', '-gn'], capture_output=True, text=True).stdout.strip())\n"
        "try:\n    open('/etc/passwd', 'a')\nexcept OSError as e:\n    print('refused', e.errno)\n"
    )
    seen = []
    for session in (first, second):
        lines = stdout_of(await run(agent, session, code)).splitlines()
        uid, gid, name, user = lines[0].split()
        assert uid == gid and name == user == "work"
        base = agent.config.sandbox_uid_base
        assert base <= int(uid) < base + agent.config.sandbox_uid_count
        assert lines[1] == "True work work" and lines[2] in ("refused 13", "refused 30")  # root's, read-only
        info = await inspect(container_of(agent, session).container_id)
        assert info["Config"]["User"] == f"{uid}:{uid}"
        seen.append(uid)
    assert seen[0] != seen[1]
    failed = await run(agent, session, "raise SystemExit(3)")
    assert failed.exit_code == 3
    assert agent.info().backend == "docker" and "python" in agent.info().environments


async def test_the_container_is_set_up_as_the_issue_lists(agent: Agent, session: str) -> None:
    sandbox = container_of(agent, session)
    info = await inspect(sandbox.container_id)
    config, host = info["Config"], info["HostConfig"]
    uid = container_of(agent, session).container_spec.uid
    assert config["Image"] == IMAGE and config["User"] == f"{uid}:{uid}" != "1000:1000"
    assert config["Labels"][LABEL_AGENT] == agent.config.agent_id
    assert config["Labels"][LABEL_SESSION] == session
    assert config["Labels"][LABEL_DATA_DIR] == agent.backend.data_digest  # type: ignore[attr-defined]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    profile = next(opt for opt in host["SecurityOpt"] if opt.startswith("seccomp="))
    assert any(rule["names"] == ["keyctl"] for rule in json.loads(profile.removeprefix("seccomp="))["syscalls"])
    assert host["Memory"] == host["MemorySwap"] == agent.config.default_mem
    assert host["NanoCpus"] == int(agent.config.default_cpu * 10**9)
    assert host["PidsLimit"] == agent.config.default_pids
    assert "/tmp" in host["Tmpfs"]
    assert any(bind.endswith(":/opt/bai/bai/runner:ro") for bind in host["Binds"])
    assert info["State"]["Running"] is True


async def test_the_sandbox_is_read_only_offline_and_unprivileged(agent: Agent, session: str) -> None:
    code = (
        "import os, socket\n"
        "for path in ('/usr/x', '/etc/x', '/opt/bai/bai/runner/x', '/x'):\n"
        "    try:\n        open(path, 'w')\n        print('wrote', path)\n"
        "    except OSError as e:\n        print('refused', e.errno)\n"
        "open('/tmp/t', 'w').write('t'); open('/home/work/w', 'w').write('w')\n"
        "print(sorted(os.listdir('/sys/class/net')))\n"
        "s = socket.socket()\ns.settimeout(2)\n"
        "try:\n    s.connect(('1.1.1.1', 53))\n    print('online')\n"
        "except OSError as e:\n    print('offline', e.errno)\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
        "print(open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])\n"
    )
    lines = stdout_of(await run(agent, session, code)).splitlines()
    assert lines[:4] == ["refused 30"] * 4  # EROFS
    assert lines[4] == "['lo']"
    assert lines[5].startswith("offline")
    assert lines[6:] == ["0000000000000000", "1"]


async def test_denied_syscalls_fail_with_eperm(agent: Agent, session: str) -> None:
    code = (
        "import ctypes, json, os, termios, fcntl\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def call(nr, *args):\n"
        "    ctypes.set_errno(0)\n"
        "    res = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) for a in args])\n"
        "    return ctypes.get_errno() if res == -1 else 'ok'\n"
        "out = {'keyctl': call(250, 0, 2**64 - 3, 0), 'unshare_user': call(272, 0x10000000),\n"
        "       'ptrace': call(101, 0, 0, 0, 0), 'userfaultfd': call(323, 1)}\n"
        "master, slave = os.openpty()\n"
        "try:\n    fcntl.ioctl(slave, termios.TIOCSTI, b'x'); out['tiocsti'] = 'ok'\n"
        "except OSError as e:\n    out['tiocsti'] = e.errno\n"
        "print(json.dumps(out))\n"
    )
    out = json.loads(stdout_of(await run(agent, session, code)))
    assert out == {name: 1 for name in out}, out  # EPERM from the filter


async def test_interrupt_and_exec_timeout(agent: Agent, session: str) -> None:
    first = await agent.execute(query(session, "import time\ntime.sleep(30)", flush=0.3))
    assert first.status == "continued"
    await agent.interrupt(session)
    last = await agent.execute(
        ExecRequest(session_id=session, mode="continue", run_id=first.run_id, flush_timeout_s=10.0)
    )
    assert last.status == "finished" and "KeyboardInterrupt" in stderr_of(last)
    assert stdout_of(await run(agent, session, "print('still here')")) == "still here\n"
    timed = await new_session(agent, exec_timeout_s=0.5)
    started = time.monotonic()
    result = await run(agent, timed, "while True:\n    pass\n")
    assert result.status == "exec-timeout" and time.monotonic() - started < 5
    assert result.stats is not None and result.stats.cpu_ms > 0
    assert stdout_of(await run(agent, timed, "print('ok')")) == "ok\n"


async def test_a_memory_bomb_is_killed_and_reported(agent: Agent) -> None:
    session = await new_session(agent, resources={"mem": str(128 * 2**20)})
    result = await run(agent, session, "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))\n")
    assert result.exit_code != 0
    assert "memory" in stderr_of(result).lower()
    assert (await agent.session_stats(session)).oom_kills >= 1
    assert stdout_of(await run(agent, session, "print('back')")) == "back\n"


async def test_a_fork_bomb_stops_at_the_pid_limit(agent: Agent) -> None:
    session = await new_session(agent, resources={"pids": "64"})
    code = (
        "import os, time\nn = 0\ntry:\n    while n < 100000:\n        if os.fork() == 0:\n"
        "            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n"
        "    print('stopped after', n, 'forks:', e.strerror)\n"
    )
    out = stdout_of(await run(agent, session, code))
    assert out.startswith("stopped after") and int(out.split()[2]) < 64


async def test_killing_everything_inside_spares_the_runner(agent: Agent, session: str) -> None:
    result = await run(agent, session, "import os, signal\nos.kill(1, signal.SIGKILL)\nprint('survived')")
    assert stdout_of(result) == "survived\n"
    await run(agent, session, "import os, signal\nos.kill(-1, signal.SIGKILL)\n")
    assert stdout_of(await run(agent, session, "print(1 + 1)")) == "2\n"


async def test_stats_come_from_the_containers_cgroup(agent: Agent, session: str) -> None:
    big = await agent.execute(
        query(
            session,
            "import time\nx = b'x' * (100 * 2**20)\nt = time.process_time()\n"
            "while time.process_time() - t < 0.2:\n    pass\ndel x",
        )
    )
    assert big.stats is not None
    assert big.stats.mem_peak >= 100 * 2**20 and big.stats.cpu_ms >= 200
    small = await agent.execute(query(session, "1"))
    assert small.stats is not None and small.stats.mem_peak < 60 * 2**20
    live = await agent.session_stats(session)
    assert live.cpu_used_ms >= 200 and live.mem_limit == agent.config.default_mem and live.cpu_limit == "1"
    await agent.execute(query(session, "open('/home/work/f', 'wb').write(b'x' * 2**20)"))
    final = await agent.destroy_session(session)
    assert final.mem_max >= 100 * 2**20 and final.cpu_used_ms >= 200
    assert final.io_scratch_size >= 2**20


async def test_restart_keeps_scratch_and_drops_state(agent: Agent, session: str) -> None:
    await agent.execute(query(session, "x = 1\nopen('/home/work/kept', 'w').write('yes')\nopen('/tmp/gone', 'w')"))
    await agent.restart_session(session)
    result = await agent.execute(
        query(
            session, "import os\nprint('x' in globals(), open('/home/work/kept').read(), os.path.exists('/tmp/gone'))"
        )
    )
    assert stdout_of(result) == "False yes False\n"
    assert result.stats is not None and result.stats.mem_peak > 0  # the meter was reopened


async def test_destroy_removes_the_container_and_its_dirs(agent: Agent, session: str) -> None:
    sandbox = container_of(agent, session)
    await agent.destroy_session(session)
    with pytest.raises(aiodocker.DockerError):
        await inspect(sandbox.container_id)
    assert not sandbox.socket_dir.exists() and not sandbox.scratch_disk.path.exists()


async def test_bad_requests_and_a_runner_that_cannot_start(agent: Agent) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await new_session(agent, environment="cobol")
    assert caught.value.field == "environment"


async def test_a_failed_start_reports_the_containers_words_and_leaves_nothing(tmp_path: Any) -> None:
    broken = tmp_path / "runner"
    broken.mkdir()
    (broken / "main.py").write_text("raise SystemExit('this runner is broken')\n")
    broken.chmod(0o755)
    (broken / "main.py").chmod(0o644)
    (broken / "__init__.py").write_text("")
    (broken / "__init__.py").chmod(0o644)
    async with docker_agent(runner_dir=broken, startup_timeout_s=10) as agent:
        with pytest.raises(SessionCreationFailed) as caught:
            await new_session(agent)
        assert "this runner is broken" in caught.value.message
        assert agent.backend.sandboxes == {}  # type: ignore[attr-defined]
        docker = aiodocker.Docker()
        try:
            left = await docker.containers.list(all=True, filters={"label": [f"{LABEL_AGENT}={agent.config.agent_id}"]})
        finally:
            await docker.close()
        assert left == []


async def test_the_agent_removes_what_its_predecessor_left() -> None:
    config = make_config(backend="docker", pool_size=0)
    digest = DockerBackend(config).data_digest
    docker = aiodocker.Docker()

    async def leave(name: str, data_dir_digest: str) -> str:
        labels = {LABEL_AGENT: config.agent_id, LABEL_SESSION: name, LABEL_DATA_DIR: data_dir_digest}
        body = {"Image": IMAGE, "Cmd": ["sleep", "60"], "Labels": labels, "HostConfig": {"NetworkMode": "none"}}
        container = await docker.containers.run(body, name=f"bai-{config.agent_id}-{name}")
        return container.id

    neighbours = ""
    try:
        ours = await leave("old", digest)
        neighbours = await leave("neighbours", "0" * 16)  # same agent id, another data dir
        async with docker_agent(agent_id=config.agent_id, data_dir=config.data_dir) as agent:
            assert agent.sessions == {}
            with pytest.raises(aiodocker.DockerError):
                await docker._query_json(f"containers/{ours}/json")
            assert (await docker._query_json(f"containers/{neighbours}/json"))["State"]["Running"]
    finally:
        if neighbours:
            await docker.containers.container(neighbours).delete(force=True)
        await docker.close()


async def test_a_pooled_container_takes_the_sessions_limits_and_name() -> None:
    async with docker_agent(pool_size=1) as agent:
        await _pool_ready(agent)
        started = time.perf_counter()
        session = await new_session(agent, resources={"mem": str(256 * 2**20), "pids": "100"})
        claimed_in = time.perf_counter() - started
        sandbox = container_of(agent, session)
        info = await inspect(sandbox.container_id)
        assert info["Name"] == f"/bai-{agent.config.agent_id}-{session}"
        assert info["Config"]["Labels"][LABEL_SESSION] != session  # made for the pool, then claimed
        assert info["HostConfig"]["Memory"] == 256 * 2**20 and info["HostConfig"]["PidsLimit"] == 100
        if sandbox.parent is not None:  # the session cgroup above the container took them too
            assert sandbox.parent.limits.mem == 256 * 2**20 and sandbox.parent.limits.pids == 100
            memory = sandbox.parent.dirs[0]  # v1: the memory hierarchy's comes first; v2: the one
            limit = memory / ("memory.limit_in_bytes" if (memory / "memory.limit_in_bytes").exists() else "memory.max")
            assert int(limit.read_text()) == 256 * 2**20
        assert stdout_of(await run(agent, session, "print('pooled')")) == "pooled\n"
        assert claimed_in < 1.0
        # a session with the agent's default limits: no update, the name still follows
        await _pool_ready(agent)
        plain = await new_session(agent)
        info = await inspect(container_of(agent, plain).container_id)
        assert info["Name"] == f"/bai-{agent.config.agent_id}-{plain}"
        assert info["Config"]["Labels"][LABEL_SESSION] != plain
        assert info["HostConfig"]["Memory"] == agent.config.default_mem
        assert stdout_of(await run(agent, plain, "print('plain')")) == "plain\n"


async def _pool_ready(agent: Agent) -> None:
    pool = agent.pool
    assert pool is not None
    await until(lambda: pool.counts().get("python", 0), what="a pooled sandbox")


@pytest.mark.parametrize("fresh_server", [{"backend": "docker"}], indirect=True)
def test_a_session_through_the_api(fresh_server: Any) -> None:
    client = SignedClient(fresh_server.endpoint, fresh_server.access_key, fresh_server.secret_key)
    try:
        name = f"d-{uuid.uuid4().hex[:8]}"
        created = client.post("/session", {"image": "python", "name": name})
        assert created.status_code == 201, created.text
        result = client.run(name, "import os\nprint(os.path.exists('/.dockerenv'), os.getuid() >= 1_000_000)")
        assert result["console"] == [["stdout", "True True\n"]], result
        stats = client.delete(f"/session/{name}").json()["stats"]
        assert stats["status"] == "terminated"
    finally:
        client.close()


async def test_dockers_init_above_the_runner_on_request() -> None:
    async with docker_agent(docker_init=True) as agent:
        session = await new_session(agent)
        out = stdout_of(await run(agent, session, "print(open('/proc/1/comm').read().strip())"))
        assert out == "docker-init\n"
        info = await inspect(container_of(agent, session).container_id)
        assert info["HostConfig"]["Init"] is True


async def test_a_run_whose_container_dies_is_reported(agent: Agent, session: str) -> None:
    import signal

    gone: list[str] = []

    async def on_gone(event: Any) -> None:
        gone.append(event.reason)

    agent.on_session_gone = on_gone
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2:\n    pass\n"
    first = await agent.execute(query(session, code + "print('spun', flush=True)\ntime.sleep(60)\n", flush=0.3))
    seen = stdout_of(first)
    while "spun" not in seen:
        answer = await agent.execute(
            ExecRequest(session_id=session, mode="continue", run_id=first.run_id, flush_timeout_s=0.3)
        )
        seen += stdout_of(answer)
    pid = container_of(agent, session).runner_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the runner, PID 1 of the container, dies mid-run
    result = await agent.execute(
        ExecRequest(session_id=session, mode="continue", run_id=first.run_id, flush_timeout_s=10)
    )
    assert result.status == "finished" and result.exit_code == 137
    await until(lambda: gone, what="the session reported gone")
    assert "exit" in gone[0].lower(), gone
    if agent.backend.session_cgroups:  # type: ignore[attr-defined]  # the figures outlive the container
        assert result.stats is not None and result.stats.cpu_ms >= 200


async def test_a_connection_from_outside_the_container_is_refused(agent: Agent, session: str) -> None:
    import socket

    sandbox = container_of(agent, session)
    intruder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    intruder.settimeout(10)
    intruder.connect(str(sandbox.socket_dir / "runner.sock"))  # queued before the restarted runner's
    try:
        await agent.restart_session(session)
        assert intruder.recv(1) == b""  # closed by the agent
        assert sandbox.runner_pid is not None and sandbox.runner_pid != os.getpid()
        assert stdout_of(await run(agent, session, "print('the runner')")) == "the runner\n"
    finally:
        intruder.close()
