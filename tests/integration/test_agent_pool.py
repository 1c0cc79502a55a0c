"""The warm pool with real sandboxes: claims are served from it and refilled, a
claimed sandbox gets its session's limits and variables and nothing of another
session, pool size 0 starts cold, and an idle sandbox that dies is replaced; on both
backends (``[local]``, ``[docker]``). The two tests that reach the local sandbox's own
parts (bwrap's child pid, the agent's runner python) are ``local_only``, with
``docker_only`` variants at the end (the runner's pid, the image's runner python)."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from decimal import Decimal

import aiodocker
import pytest
from agent_sandbox import new_session, run, running_agent, sandbox_unavailable, stderr_of, stdout_of
from agent_sandbox import spec as spec_of

from bai.agent.agent import Agent
from bai.agent.backends.docker import backend as docker_backend
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.docker.kernel_images import KernelImage
from bai.agent.backends.docker.sandbox import DockerSandbox
from bai.agent.backends.local.backend import LocalBackend
from bai.agent.backends.local.sandbox import LocalSandbox
from bai.agent.cgroups import Limits
from bai.agent.pool import NAME_PREFIX
from bai.common.agent_rpc import SandboxSpec
from bai.common.errors import SessionCreationFailed
from tests.capabilities import needs, require_or_skip
from tests.waiting import until

REASON = sandbox_unavailable()
pytestmark = [pytest.mark.sandbox, needs("sandbox", REASON), pytest.mark.backends]


async def pool_count(agent: Agent, at_least: int) -> int:
    """Wait until the python pool holds at least ``at_least`` ready sandboxes."""
    await until(lambda: agent.info().pool.get("python", 0) >= at_least, what=f"{at_least} pooled sandboxes")
    return agent.info().pool["python"]


@pytest.fixture
async def agent(backend: str) -> AsyncIterator[Agent]:
    async with running_agent(backend=backend, pool_size=2) as started:
        await pool_count(started, 2)
        yield started


async def test_a_create_is_served_from_the_pool_and_refilled(agent: Agent) -> None:
    assert isinstance(agent.backend, (LocalBackend, DockerBackend))
    pooled = {s.name for s in agent.backend.sandboxes.values()}
    assert len(pooled) == 2 and all(name.startswith(NAME_PREFIX) for name in pooled)
    session = await new_session(agent)
    assert agent.backend.sandboxes[session].name in pooled  # a pooled one, renamed
    assert agent.info().pool["python"] <= 1
    assert stdout_of(await run(agent, session, "print(6 * 7)")) == "42\n"
    assert await pool_count(agent, 2) == 2


async def test_a_claimed_sandbox_gets_its_sessions_limits(agent: Agent) -> None:
    session = await new_session(agent, resources={"mem": str(128 * 2**20), "cpu": "0.5", "pids": "64"})
    assert isinstance(agent.backend, (LocalBackend, DockerBackend))
    assert agent.backend.sandboxes[session].name.startswith(NAME_PREFIX)
    stats = await agent.session_stats(session)
    assert stats.mem_limit == 128 * 2**20
    assert stats.cpu_limit == "0.5"
    result = await run(agent, session, "x = b'x' * (256 * 2**20)  # twice the limit\n")
    assert result.exit_code != 0
    assert "memory limit of 128 MiB" in stderr_of(result)
    assert (await agent.session_stats(session)).oom_kills >= 1


async def test_a_claimed_sandbox_gets_its_sessions_environment(agent: Agent) -> None:
    session = await new_session(agent, environ={"GREETING": "hello pool", "LANG": "C.UTF-8"})
    code = "import os, subprocess\nprint(os.environ['GREETING'], os.getcwd())\n"
    code += "print(subprocess.run(['sh', '-c', 'echo $GREETING'], capture_output=True, text=True).stdout, end='')\n"
    result = await run(agent, session, code)
    assert stdout_of(result) == "hello pool /home/work\nhello pool\n", result


async def test_no_state_leaks_from_one_session_to_the_next(agent: Agent) -> None:
    first = await new_session(agent, environ={"SECRET": "s3cr3t"})
    code = "open('/home/work/left.txt', 'w').write('x')\nleft = 1\nimport os\nos.environ['MADE'] = '1'"
    result = await run(agent, first, code)
    assert result.exit_code == 0, result
    await agent.destroy_session(first)
    seen = []
    for _ in range(3):  # past every sandbox that was in the pool while the first lived
        await pool_count(agent, 1)
        session = await new_session(agent)
        code = "import os\nprint(os.listdir('/home/work'), 'left' in globals(), "
        code += "'SECRET' in os.environ, 'MADE' in os.environ)"
        seen.append(stdout_of(await run(agent, session, code)))
        await agent.destroy_session(session)
    assert seen == ["[] False False False\n"] * 3


async def test_pool_size_zero_starts_cold(backend: str) -> None:
    async with running_agent(backend=backend, pool_size=0) as agent:
        assert agent.info().pool == {}
        session = await new_session(agent, environ={"A": "b"})
        assert isinstance(agent.backend, (LocalBackend, DockerBackend))
        assert agent.backend.sandboxes[session].name == session
        assert stdout_of(await run(agent, session, "import os; print(os.environ['A'])")) == "b\n"


@pytest.mark.local_only(reason="kills bwrap's child pid; a docker variant kills the runner")
async def test_an_idle_pooled_sandbox_that_dies_is_replaced(agent: Agent) -> None:
    assert isinstance(agent.backend, (LocalBackend, DockerBackend))
    victim = next(iter(agent.backend.sandboxes.values()))
    assert victim.child_pid is not None
    os.kill(victim.child_pid, signal.SIGKILL)
    sandboxes = agent.backend.sandboxes
    await until(lambda: victim.name not in {s.name for s in sandboxes.values()}, what="the dead sandbox dropped")
    assert await pool_count(agent, 2) == 2
    session = await new_session(agent)
    assert stdout_of(await run(agent, session, "print(1 + 1)")) == "2\n"


async def test_stop_destroys_pooled_sandboxes(backend: str) -> None:
    async with running_agent(backend=backend, pool_size=2) as agent:
        await pool_count(agent, 2)
        assert isinstance(agent.backend, (LocalBackend, DockerBackend))
        sandboxes = list(agent.backend.sandboxes.values())
        await agent.stop()
        assert agent.backend.sandboxes == {}
        for sandbox in sandboxes:
            assert not sandbox.work_dir().path.exists()


@pytest.mark.local_only(reason="a container's runner python is its image's label; a docker variant breaks it there")
async def test_a_pool_that_cannot_start_leaves_creates_cold_and_failing_clearly() -> None:
    async with running_agent(runner_python="/usr/bin/no-such-python", pool_size=2) as agent:
        with pytest.raises(SessionCreationFailed) as caught:
            await new_session(agent)
        assert "no-such-python" in caught.value.message
        assert agent.info().pool == {"python": 0}


async def test_a_session_with_startup_variables_starts_cold(agent: Agent) -> None:
    session = await new_session(agent, environ={"PYTHONPATH": "/opt/extra"})
    assert isinstance(agent.backend, (LocalBackend, DockerBackend))
    assert agent.backend.sandboxes[session].name == session  # not a pooled one
    assert agent.info().pool["python"] == 2
    result = await run(agent, session, "import sys; print('/opt/extra' in sys.path)")
    assert stdout_of(result) == "True\n"


async def test_a_pooled_sandbox_that_refuses_the_limits_is_destroyed_and_the_session_starts_cold(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(agent.backend, (LocalBackend, DockerBackend))
    pooled = list(agent.backend.sandboxes.values())

    async def refuse(self: LocalSandbox | DockerSandbox, spec: SandboxSpec, limits: Limits) -> None:
        raise SessionCreationFailed("the pooled sandbox already uses more")

    monkeypatch.setattr(type(pooled[0]), "claim", refuse)
    session = await new_session(agent, resources={"mem": str(64 * 2**20)})
    assert agent.backend.sandboxes[session].name == session
    assert (await agent.session_stats(session)).mem_limit == 64 * 2**20
    assert stdout_of(await run(agent, session, "print(2 + 2)")) == "4\n"
    claimed = [s for s in pooled if s.name not in {x.name for x in agent.backend.sandboxes.values()}]
    assert len(claimed) == 1 and not claimed[0].work_dir().path.exists()  # destroyed, not reused


async def test_a_memory_limit_below_the_pooled_sandboxs_usage_is_refused(agent: Agent) -> None:
    assert agent.pool is not None
    session = agent.pool.claim("python")
    assert session is not None
    try:
        with pytest.raises(SessionCreationFailed, match="already uses"):
            await session.sandbox.claim(spec_of("tiny"), Limits(cpu=Decimal(1), mem=4096, pids=64))
        assert session.sandbox.limits.mem == agent.config.default_mem
    finally:
        session.closing = True
        session.detach()
        session.unwatch_oom()
        await session.sandbox.destroy(grace_s=0)


async def test_a_restarted_pooled_session_keeps_its_environment(agent: Agent) -> None:
    session = await new_session(agent, environ={"GREETING": "again"})
    assert isinstance(agent.backend, (LocalBackend, DockerBackend))
    assert agent.backend.sandboxes[session].name.startswith(NAME_PREFIX)
    await agent.restart_session(session)
    result = await run(agent, session, "import os; print(os.environ['GREETING'])")
    assert stdout_of(result) == "again\n"


async def test_the_pool_empties_under_memory_pressure_and_refills_after(backend: str) -> None:
    async with running_agent(backend=backend, pool_size=2) as agent:
        pool = agent.pool
        assert pool is not None
        await pool_count(agent, 2)
        pool.min_available_mem = 2**62  # more than any host has: under pressure
        pool.check_memory()
        assert agent.info().pool == {"python": 0}
        assert isinstance(agent.backend, (LocalBackend, DockerBackend))
        sandboxes = agent.backend.sandboxes
        await until(lambda: not sandboxes, what="the pool emptied under pressure")
        session = await new_session(agent)  # cold
        assert agent.backend.sandboxes[session].name == session
        pool.min_available_mem = 1
        pool.check_memory()
        assert await pool_count(agent, 2) == 2


async def test_a_claimed_sandbox_has_the_preloaded_modules_and_a_bad_one_does_not_stop_it(backend: str) -> None:
    # colorsys and wave: standard modules nothing imports on its own
    preload = "colorsys, wave,no_such_module_here"
    async with running_agent(backend=backend, pool_size=1, python_preload=preload) as agent:
        await pool_count(agent, 1)
        assert isinstance(agent.backend, (LocalBackend, DockerBackend))
        pooled = {s.name for s in agent.backend.sandboxes.values()}
        session = await new_session(agent)
        assert agent.backend.sandboxes[session].name in pooled
        code = "import sys\nprint(sorted(m for m in ('colorsys', 'wave', 'no_such_module_here') if m in sys.modules))"
        result = await run(agent, session, code)
        assert stdout_of(result) == "['colorsys', 'wave']\n", stderr_of(result)
        assert "colorsys" not in stdout_of(await run(agent, session, "print(sorted(globals()))"))  # not bound


# -- the docker variants of the local_only tests ---------------------------------


@pytest.mark.docker_only(reason="the local test kills bwrap's child pid; here the runner's")
async def test_an_idle_pooled_container_that_dies_is_replaced(agent: Agent) -> None:
    assert isinstance(agent.backend, DockerBackend)
    victim = next(iter(agent.backend.sandboxes.values()))
    assert victim.runner_pid is not None
    os.kill(victim.runner_pid, signal.SIGKILL)
    sandboxes = agent.backend.sandboxes
    await until(lambda: victim.name not in {s.name for s in sandboxes.values()}, what="the dead sandbox dropped")
    assert await pool_count(agent, 2) == 2
    session = await new_session(agent)
    assert stdout_of(await run(agent, session, "print(1 + 1)")) == "2\n"
    docker = aiodocker.Docker()
    try:
        with pytest.raises(aiodocker.DockerError):
            await docker.containers.get(victim.container_id)  # removed, not left stopped
    finally:
        await docker.close()


@pytest.mark.docker_only(reason="a container's runner python is its image's label, not the agent's runner_python")
async def test_a_pool_that_cannot_start_leaves_creates_cold_and_failing_clearly_in_docker(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ref: str, labels: dict[str, str]) -> KernelImage | None:
        image = image_from(ref, labels)
        return None if image is None else dataclasses.replace(image, runner_python="/usr/bin/no-such-python")

    image_from = docker_backend.image_from
    monkeypatch.setattr(docker_backend, "image_from", broken)
    async with running_agent(backend=backend, pool_size=2) as agent:
        with pytest.raises(SessionCreationFailed) as caught:
            await new_session(agent)
        assert "no-such-python" in caught.value.message
        assert agent.info().pool == {"python": 0}


@pytest.mark.docker_only(reason="the local backend's pooled environments are the agent's own tests'")
async def test_only_python_is_pooled_and_a_repl_engines_session_gets_its_variables(backend: str) -> None:
    """A Lua or R runner starts its REPL with the container, before a claim could give it
    the session's variables: those environments start cold (as on the local backend)."""
    async with running_agent(backend=backend, pool_size=1) as agent:
        await pool_count(agent, 1)
        assert isinstance(agent.backend, DockerBackend)
        assert agent.backend.pooled_environments() == ["python"]
        others = [name for name in agent.backend.environments() if agent.backend.images[name].engine != "python"]
        assert set(agent.info().pool) == {"python"}
        if "lua" not in others:
            require_or_skip("environments", "the lua image is not built (bai image build lua)")
        session = await new_session(agent, environment="lua", environ={"GREETING": "cold"})
        assert agent.backend.sandboxes[session].name == session  # not a pooled one
        assert stdout_of(await run(agent, session, 'print(os.getenv("GREETING"))')) == "cold\n"
