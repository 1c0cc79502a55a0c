"""The local backend's warm-pool tests (``test_agent_pool``: a create served from the
pool and refilled, a claimed sandbox takes its session's limits, variables and nothing
of another session, pool size 0 starts cold, stop, startup variables start cold, a
claim that refuses the limits, a memory limit under the pooled sandbox's usage, restart,
memory pressure, preloaded modules) run again on the docker backend, with this module's
``agent`` fixture (a docker agent with two pooled containers). Those that read bwrap's
child pid or the runner's host python have docker variants below. Skipped with the
reason where Docker or the image is missing."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest
from agent_sandbox import new_session, run, stdout_of
from docker_sandbox import docker_unavailable, running_docker_agent, share

from bai.agent.agent import Agent
from bai.agent.backends.docker import backend as docker_backend
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.docker.kernel_images import KernelImage
from bai.agent.backends.docker.sandbox import DockerSandbox
from bai.common.errors import SessionCreationFailed
from tests.capabilities import needs, require_or_skip

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]

LOCAL_ONLY = {
    "test_an_idle_pooled_sandbox_that_dies_is_replaced": "kills bwrap's child pid; a variant kills the runner",
    "test_a_pool_that_cannot_start_leaves_creates_cold_and_failing_clearly": (
        "a container's runner python is its image's label, not the agent's runner_python; a variant breaks it there"
    ),
}

POOL = share(
    Path(__file__).with_name("test_agent_pool.py"),
    globals(),
    local_only=LOCAL_ONLY,
    patch={"running_agent": running_docker_agent, "LocalBackend": DockerBackend, "LocalSandbox": DockerSandbox},
)


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    async with running_docker_agent(pool_size=2) as started:
        await POOL.pool_count(started, 2)
        yield started


async def test_an_idle_pooled_container_that_dies_is_replaced(agent: Agent) -> None:
    assert isinstance(agent.backend, DockerBackend)
    victim = next(iter(agent.backend.sandboxes.values()))
    assert victim.runner_pid is not None
    os.kill(victim.runner_pid, signal.SIGKILL)
    async with asyncio.timeout(15):
        while victim.name in {s.name for s in agent.backend.sandboxes.values()}:
            await asyncio.sleep(0.02)
    assert await POOL.pool_count(agent, 2) == 2
    session = await new_session(agent)
    assert stdout_of(await run(agent, session, "print(1 + 1)")) == "2\n"
    docker = aiodocker.Docker()
    try:
        with pytest.raises(aiodocker.DockerError):
            await docker.containers.get(victim.container_id)  # removed, not left stopped
    finally:
        await docker.close()


async def test_a_pool_that_cannot_start_leaves_creates_cold_and_failing_clearly_in_docker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(ref: str, labels: dict[str, str]) -> KernelImage | None:
        image = image_from(ref, labels)
        return None if image is None else dataclasses.replace(image, runner_python="/usr/bin/no-such-python")

    image_from = docker_backend.image_from
    monkeypatch.setattr(docker_backend, "image_from", broken)
    async with running_docker_agent(pool_size=2) as agent:
        with pytest.raises(SessionCreationFailed) as caught:
            await new_session(agent)
        assert "no-such-python" in caught.value.message
        assert agent.info().pool == {"python": 0}


async def test_only_python_is_pooled_and_a_repl_engines_session_gets_its_variables() -> None:
    """A Lua or R runner starts its REPL with the container, before a claim could give it
    the session's variables: those environments start cold (as on the local backend)."""
    async with running_docker_agent(pool_size=1) as agent:
        await POOL.pool_count(agent, 1)
        assert isinstance(agent.backend, DockerBackend)
        assert agent.backend.pooled_environments() == ["python"]
        others = [name for name in agent.backend.environments() if agent.backend.images[name].engine != "python"]
        assert set(agent.info().pool) == {"python"}
        if "lua" not in others:
            require_or_skip("environments", "the lua image is not built (bai image build lua)")
        session = await new_session(agent, environment="lua", environ={"GREETING": "cold"})
        assert agent.backend.sandboxes[session].name == session  # not a pooled one
        assert stdout_of(await run(agent, session, 'print(os.getenv("GREETING"))')) == "cold\n"
