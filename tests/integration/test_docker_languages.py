"""Other languages in containers: the image's catalog entry tells the runner how to run
its REPL and batch steps, as on the local backend (a Lua image, where one is built)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from agent_sandbox import new_session, stderr_of, stdout_of
from docker_sandbox import docker_agent, docker_unavailable, image_missing

from bai.agent.agent import Agent
from bai.common.agent_rpc import BatchSteps, ExecRequest
from bai.common.errors import SessionCreationFailed
from tests.capabilities import needs

LUA = "bai/lua:5.4"


REASON = docker_unavailable()
LUA_REASON = None if REASON is not None else asyncio.run(image_missing(LUA, "lua"))
pytestmark = [pytest.mark.sandbox, needs("docker", REASON), needs("environments", LUA_REASON)]


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


async def test_a_container_sees_only_its_own_gpus() -> None:
    """A fake inventory (bai.agent.gpu): the device "nodes" are files, bound at /dev/nvidia<N>;
    real nodes go in as Docker devices, by the same allocation."""
    async with docker_agent(fake_gpus=2) as agent:
        assert agent.info().capacity["cuda.device"] == "2"
        probe = (
            "import os\nnodes = sorted(n for n in os.listdir('/dev') if n.startswith('nvidia'))\n"
            "print(nodes, [open('/dev/' + n).read().strip() for n in nodes if n[6:].isdigit()],"
            " os.environ.get('CUDA_VISIBLE_DEVICES'))\n"
        )
        first = await new_session(agent, resources={"cuda.device": "1"})
        plain = await new_session(agent)
        seen = await agent.execute(ExecRequest(session_id=first, mode="query", code=probe, flush_timeout_s=10))
        assert stdout_of(seen) == "['nvidia0', 'nvidiactl'] ['GPU-fake-0000'] GPU-fake-0000\n", stderr_of(seen)
        none = await agent.execute(ExecRequest(session_id=plain, mode="query", code=probe, flush_timeout_s=10))
        assert stdout_of(none) == "[] [] None\n", stderr_of(none)
        with pytest.raises(SessionCreationFailed, match=r"2 GPU.*1 of 2 free"):
            await new_session(agent, resources={"cuda.device": "2"})
        await agent.destroy_session(first)
        again = await new_session(agent, resources={"cuda.device": "2"})
        both = await agent.execute(ExecRequest(session_id=again, mode="query", code=probe, flush_timeout_s=10))
        assert "GPU-fake-0000,GPU-fake-0001" in stdout_of(both)


PYTORCH = "bai/python-pytorch:2.13"


PYTORCH_REASON = None if REASON is not None else asyncio.run(image_missing(PYTORCH, "python-pytorch"))


@needs(
    "environments",
    PYTORCH_REASON and f"{PYTORCH_REASON}; its torch wheel comes from the host's local wheels, BAI_IMAGE_WHEELS or "
    "pip's find-links",
)
async def test_pytorch_in_a_container_keeps_its_tensors(agent: Agent) -> None:
    """The venv entry's interpreter runs the session (its label's runner python and engine)."""
    assert "python-pytorch" in agent.info().environments
    session = await new_session(agent, environment="python-pytorch", resources={"mem": str(2 * 2**30)})
    code = "import torch, sys\nt = torch.ones(3, 3) * 2\nprint(torch.__version__, sys.prefix)"
    first = await agent.execute(ExecRequest(session_id=session, mode="query", code=code, flush_timeout_s=60))
    assert first.status == "finished" and stdout_of(first) == "2.13.0+cpu /opt/bai/venv\n", stderr_of(first)
    second = await agent.execute(
        ExecRequest(session_id=session, mode="query", code="print(float((t @ t).sum()))", flush_timeout_s=60)
    )
    assert stdout_of(second) == "108.0\n", stderr_of(second)
