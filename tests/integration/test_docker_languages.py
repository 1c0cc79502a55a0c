"""Other languages in containers: the image's catalog entry tells the runner how to run
its REPL and batch steps, as on the local backend (a Lua image, where one is built)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import aiodocker
import pytest
from agent_sandbox import new_session, stderr_of, stdout_of
from docker_sandbox import docker_agent, docker_unavailable

from bai.agent.agent import Agent
from bai.common.agent_rpc import BatchSteps, ExecRequest

LUA = "bai/lua:5.4"


async def _lua_missing() -> str | None:
    docker = aiodocker.Docker()
    try:
        await docker.images.inspect(LUA)
    except aiodocker.DockerError:
        return f"the {LUA} image is missing (bai image build lua)"
    finally:
        await docker.close()
    return None


REASON = docker_unavailable() or (asyncio.run(_lua_missing()) if os.geteuid() == 0 else None)
pytestmark = [pytest.mark.sandbox, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    async with docker_agent() as started:
        yield started


async def test_a_lua_repl_keeps_state_and_batch_mode_runs_main(agent: Agent) -> None:
    assert "lua" in agent.info().environments
    session = await new_session(agent, environment="lua")
    first = await agent.execute(ExecRequest(session_id=session, mode="query", code="x = 40", flush_timeout_s=10))
    assert (first.status, first.exit_code) == ("finished", 0), stderr_of(first)
    second = await agent.execute(ExecRequest(session_id=session, mode="query", code="print(x + 2)", flush_timeout_s=10))
    assert stdout_of(second) == "42\n", stderr_of(second)
    write = 'local f = io.open("main.lua", "w") f:write("print(\\"batch \\" .. 6 * 7)") f:close()'
    await agent.execute(ExecRequest(session_id=session, mode="query", code=write, flush_timeout_s=10))
    batch = await agent.execute(
        ExecRequest(session_id=session, mode="batch", batch=BatchSteps(exec="*"), flush_timeout_s=10)
    )
    while batch.status != "finished":
        batch = await agent.execute(
            ExecRequest(session_id=session, mode="continue", run_id=batch.run_id, flush_timeout_s=10)
        )
    assert (batch.exit_code, stdout_of(batch)) == (0, "batch 42\n"), stderr_of(batch)
