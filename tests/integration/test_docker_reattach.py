"""Re-attaching running containers (bai.agent.backends.docker.backend): an agent that stops with
``keep_sessions`` or dies leaves its sessions running; the next agent on the same data dir
takes them back, with their REPL state, files, limits, accounting and GPUs. What cannot
be taken back (a container that is gone, a runner past its window) leaves nothing behind.
Against a real engine and the ``bai/python:3.11`` image; skipped with the reason elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from agent_sandbox import make_config, new_session, run, stdout_of
from docker_sandbox import container_of, docker_unavailable

from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.docker.container import LABEL_AGENT
from bai.agent.config import AgentConfig
from bai.common.agent_rpc import ExecRequest
from tests.apiclient import SignedClient
from tests.capabilities import needs
from tests.integration.test_cluster import Cluster, cluster, start_agent
from tests.waiting import HANG_S, until, wait_for

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]
__all__ = ["cluster"]  # the fixture, from test_cluster


@contextlib.asynccontextmanager
async def data_dir_of_agents(**overrides: Any) -> AsyncIterator[AgentConfig]:
    """One agent id and data dir for agents started one after the other; at the end,
    whatever they left is removed."""
    config = make_config(**{"backend": "docker", "pool_size": 0, **overrides})
    try:
        yield config
    finally:
        last = Agent(config.model_copy(update={"keep_sessions": False}))
        with contextlib.suppress(Exception):
            await last.start()
            await last.stop()
        shutil.rmtree(config.data_dir, ignore_errors=True)


async def started(config: AgentConfig, **changes: Any) -> Agent:
    agent = Agent(config.model_copy(update=changes))
    await agent.start()
    return agent


async def containers(agent_id: str) -> list[dict[str, Any]]:
    docker = aiodocker.Docker()
    try:
        found = await docker.containers.list(all=True, filters={"label": [f"{LABEL_AGENT}={agent_id}"]})
        return [c._container for c in found]
    finally:
        await docker.close()


async def test_a_kept_session_is_taken_back_with_its_state_files_and_limits() -> None:
    async with data_dir_of_agents(keep_sessions=True) as config:
        first = await started(config)
        session = await new_session(first, resources={"mem": str(300 * 2**20), "pids": "77"})
        code = "x = 41\nopen('kept.txt', 'w').write('on disk')\nprint('ok')"
        assert stdout_of(await run(first, session, code)) == "ok\n"
        before = container_of(first, session)
        container_id, scratch = before.container_id, before.scratch_disk
        cpu_before = (await first.session_stats(session)).cpu_used_ms
        await first.stop()
        assert [c["Id"] for c in await containers(config.agent_id)] == [container_id]  # still running

        second = await started(config, keep_sessions=False)
        try:
            assert list(second.sessions) == [session]
            after = container_of(second, session)
            assert after.container_id == container_id and after.scratch_disk == scratch
            assert (after.limits.mem, after.limits.pids) == (300 * 2**20, 77)
            result = await run(second, session, "print(x + 1, open('kept.txt').read())")
            assert stdout_of(result) == "42 on disk\n"
            assert result.stats is not None and result.stats.mem_peak > 0  # the per-run meter is back
            stats = await second.session_stats(session)
            assert stats.cpu_used_ms >= cpu_before and stats.io_scratch_size > 0
            assert second.info().sessions == [session] and second.info().boot_id != first.info().boot_id
            # a session made by the new agent works beside it, and the old one ends cleanly
            fresh = await new_session(second)
            assert stdout_of(await run(second, fresh, "print('new')")) == "new\n"
            await second.destroy_session(session)
            assert not scratch.path.exists()
            assert not list((config.data_dir / "docker" / "sessions").glob(f"{session}*"))
        finally:
            await second.stop()
        assert await containers(config.agent_id) == []


async def test_a_claimed_pooled_session_and_one_with_a_gpu_are_taken_back() -> None:
    async with data_dir_of_agents(keep_sessions=True, pool_size=1, fake_gpus=2) as config:
        first = await started(config)
        await until(lambda: first.pool is not None and first.pool.counts().get("python"), what="a pooled sandbox")
        pooled = await new_session(first)
        assert container_of(first, pooled).container_spec.session_id != pooled  # it came from the pool
        gpu = await new_session(first, resources={"cuda.device": "1"})
        await run(first, pooled, "y = 'pooled'")
        await run(first, gpu, "import os; g = os.environ['CUDA_VISIBLE_DEVICES']")
        held = first.backend.gpu_allocator.held_by(gpu)  # type: ignore[attr-defined]
        await first.stop()

        second = await started(config, keep_sessions=False, pool_size=0)
        try:
            assert sorted(second.sessions) == sorted([pooled, gpu])
            result = await run(second, pooled, "print(y)")
            assert stdout_of(result) == "pooled\n"
            assert result.stats is not None and result.stats.cpu_ms > 0  # its session cgroup, found again
            if container_of(second, pooled).parent is not None:
                assert container_of(second, pooled).parent.dirs[0].is_dir()  # type: ignore[union-attr]
                assert (await second.session_stats(pooled)).cpu_used_ms > 0
            assert stdout_of(await run(second, gpu, "print(g == os.environ['CUDA_VISIBLE_DEVICES'])")) == "True\n"
            backend = second.backend
            assert isinstance(backend, DockerBackend)
            assert backend.gpu_allocator.held_by(gpu) == held  # not handed to anyone else
            assert len(backend.gpu_allocator.free()) == 1
        finally:
            await second.stop()


async def test_a_run_in_progress_is_interrupted_and_the_session_goes_on() -> None:
    async with data_dir_of_agents(keep_sessions=True) as config:
        first = await started(config)
        session = await new_session(first)
        await run(first, session, "z = 7")
        busy = await first.execute(
            ExecRequest(session_id=session, mode="query", code="import time\nwhile True: time.sleep(0.05)",
                        flush_timeout_s=0.3)
        )  # fmt: skip
        assert busy.status == "continued"
        await first.stop()
        second = await started(config, keep_sessions=False)
        try:
            assert stdout_of(await run(second, session, "print(z)")) == "7\n"
        finally:
            await second.stop()


async def test_what_cannot_be_taken_back_leaves_nothing() -> None:
    async with data_dir_of_agents(keep_sessions=True, docker_reattach_s=1.0) as config:
        first = await started(config)
        gone = await new_session(first)  # its container is removed while no agent runs
        late = await new_session(first)  # its runner waits 1 s only
        gone_sandbox, late_sandbox = container_of(first, gone), container_of(first, late)
        await first.stop()
        docker = aiodocker.Docker()
        try:
            await docker.containers.container(gone_sandbox.container_id).delete(force=True)
            # past the window the runner exits, and its container stops
            await asyncio.wait_for(docker.containers.container(late_sandbox.container_id).wait(), HANG_S)
        finally:
            await docker.close()

        second = await started(config, keep_sessions=False)
        try:
            assert second.sessions == {}
            assert await containers(config.agent_id) == []
            for sandbox in (gone_sandbox, late_sandbox):
                assert not sandbox.scratch_disk.path.exists()
                assert not sandbox.socket_dir.exists()
                if sandbox.scratch_disk.image is not None:
                    assert not sandbox.scratch_disk.image.exists()
            assert list((config.data_dir / "docker" / "sessions").iterdir()) == []
        finally:
            await second.stop()


async def test_a_malformed_record_is_dropped() -> None:
    async with data_dir_of_agents(keep_sessions=True) as config:
        first = await started(config)
        session = await new_session(first)
        await first.stop()
        record = config.data_dir / "docker" / "sessions" / f"{session}.json"
        record.write_text('{"version": 1, "spec": {}}')
        second = await started(config, keep_sessions=False)
        try:
            assert second.sessions == {}
            assert not record.exists()
            assert await containers(config.agent_id) == []
        finally:
            await second.stop()


# -- through the API: the embedded server killed, then started again --------------------


def _server(data_dir: Path, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    bai = Path(sys.executable).with_name("bai")
    env_file = data_dir / "client.env"
    env_file.unlink(missing_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(bai), "server", "--backend", "docker", "--port", "0", "--data-dir", str(data_dir), *extra],
            env={**os.environ, "BAI_AGENT_POOL_SIZE": "0"}, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    wait_for(lambda: env_file.exists() or proc.poll() is not None, what="the server's client.env")
    assert proc.poll() is None, log.read_text()[-2000:]
    values = {}
    for line in env_file.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = value
    return proc, values


def _client(values: dict[str, str]) -> SignedClient:
    return SignedClient(values["BACKEND_ENDPOINT"], values["BACKEND_ACCESS_KEY"], values["BACKEND_SECRET_KEY"])


@pytest.mark.parametrize("how", ["killed", "stopped with --keep-sessions"])
def test_sessions_survive_the_embedded_servers_restart(tmp_path: Path, how: str) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    extra = ("--keep-sessions",) if how != "killed" else ()
    proc, values = _server(data_dir, log, *extra)
    try:
        with _client(values) as api:
            assert api.post("/session", {"image": "python", "name": "long-lived"}).status_code == 201
            assert api.run("long-lived", "x = 41")["status"] == "finished"
        if how == "killed":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(30)

        proc, values = _server(data_dir, log)
        with _client(values) as api:
            info = api.get("/session/long-lived").json()
            assert info["status"] == "RUNNING", info
            result = api.run("long-lived", "print(x + 1)")
            assert result["status"] == "finished" and result["console"] == [["stdout", "42\n"]], result
            assert api.delete("/session/long-lived").status_code == 200
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


# -- a cluster: the agent restarts under a running manager ---------------------------------


@pytest.mark.parametrize(
    "cluster", [{"agent_lost_after_s": 30.0, "agent_args": ("--backend", "docker", "--keep-sessions")}],
    indirect=True,
)  # fmt: skip
def test_a_docker_agent_restarted_in_place_keeps_its_sessions(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.api
    assert wait_for(lambda: api.post("/session", {"image": "python", "name": "upgraded"}).status_code == 201)
    assert api.run("upgraded", "x = 'before'")["status"] == "finished"
    cluster.agent.send_signal(signal.SIGTERM)  # an upgrade: stop, start the new version
    assert cluster.agent.wait(30) == 0
    if cluster.agent.stderr is not None:
        cluster.agent.stderr.close()
    cluster.agent = start_agent(cluster, tmp_path, "--backend", "docker")
    agents = cluster.manager.manager.agents
    state = agents.get("node-1")
    assert state is not None
    old_boot = state.info.boot_id
    # the new agent listens on a port of its own: the registry holds a new record for it
    assert wait_for(lambda: (now := agents.get("node-1")) is not None and now.info.boot_id != old_boot)
    result = api.run("upgraded", "print(x, 'and after')")
    assert result["console"] == [["stdout", "before and after\n"]], result
    assert api.get("/session/upgraded").json()["status"] == "RUNNING"
    assert api.delete("/session/upgraded").status_code == 200


IMPOSTOR_LOOP = """
import socket, sys, time
sys.path.insert(0, "/opt/bai")
from bai.runner.protocol import Ready, encode
log = open("/home/work/impostor.log", "a", buffering=1)
log.write("started\\n")
while True:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect("/run/bai/runner.sock")
        s.sendall(encode(Ready(engine="python", language_version="evil")))
        log.write("connected\\n")
        data = s.recv(65536)
        log.write("got %r\\n" % data[:80])
    except OSError:
        pass
    finally:
        s.close()
    time.sleep(0.005)
"""
IMPOSTOR = (
    "import subprocess, sys\n"
    f"subprocess.Popen([sys.executable, '-c', {IMPOSTOR_LOOP!r}], start_new_session=True)\n"
    "print('planted')\n"
)


async def test_a_process_of_the_session_cannot_pose_as_its_runner_on_reattach() -> None:
    """The user's code runs while its agent is away and may connect to the agent's new
    socket first, pretending to be the runner: only the runner's own pid is accepted."""
    async with data_dir_of_agents(keep_sessions=True) as config:
        first = await started(config)
        session = await new_session(first)
        await run(first, session, "x = 'real runner'")
        assert stdout_of(await run(first, session, IMPOSTOR)) == "planted\n"
        runner_pid = container_of(first, session).runner_pid
        impostor_log = container_of(first, session).scratch_disk.path / "impostor.log"
        await first.stop()
        # the impostor runs, knocking on the old socket's name, before the agent is back
        await until(lambda: impostor_log.exists() and impostor_log.read_text().startswith("started"))
        second = await started(config, keep_sessions=False)
        try:
            sandbox = container_of(second, session)
            assert sandbox.runner_pid == runner_pid
            result = await run(second, session, "print(x)")
            assert stdout_of(result) == "real runner\n"
            log = (sandbox.scratch_disk.path / "impostor.log").read_text()
            assert log.startswith("started") and "connected" in log  # it did knock
            assert "got b'\\x" not in log  # and was never sent a frame
        finally:
            await second.stop()


async def test_a_session_whose_uid_is_no_longer_the_agents_is_not_taken_back() -> None:
    """The next agent was given another uid range: the container's uid is none of its own,
    so it is removed with its scratch disk rather than run beside the new range."""
    async with data_dir_of_agents(keep_sessions=True) as config:
        first = await started(config)
        session = await new_session(first)
        sandbox = container_of(first, session)
        await first.stop()
        second = await started(config, keep_sessions=False, sandbox_uid_base=config.sandbox_uid_base + 10_000)
        try:
            assert second.sessions == {}
            assert await containers(config.agent_id) == []
            assert not sandbox.scratch_disk.path.exists()
        finally:
            await second.stop()
