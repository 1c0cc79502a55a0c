"""Helpers for the agent's tests with real sandboxes: a started ``Agent`` on a
throwaway data dir, session specs, and a run-until-done loop over ``execute``.

Imported as ``agent_sandbox`` (tests/ is on sys.path through tests/conftest.py).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.docker.sandbox import DockerSandbox
from bai.agent.backends.local.backend import LocalBackend
from bai.agent.backends.local.sandbox import LocalSandbox
from bai.agent.cgroups import CgroupError, check_writable, detect_driver
from bai.agent.config import AgentConfig
from bai.common.agent_rpc import ExecRequest, SandboxSpec
from bai.common.wire import RunResult

BWRAP = "/usr/bin/bwrap"
RUNNER_PYTHON = "/usr/bin/python3"


def sandbox_unavailable() -> str | None:
    """Why real sandboxes cannot run here, or None when they can."""
    if not os.access(BWRAP, os.X_OK):
        return f"bubblewrap is not installed at {BWRAP}"
    if not os.access(RUNNER_PYTHON, os.X_OK):
        return f"the sandbox's python ({RUNNER_PYTHON}) is missing"
    if os.geteuid() != 0:
        return "the local backend needs root for cgroups and per-session uids"
    try:
        driver = detect_driver("probe")
        assert driver is not None
        check_writable(driver)
    except CgroupError as exc:
        return f"no writable cgroups: {exc}"
    return None


def make_config(**overrides: Any) -> AgentConfig:
    data_dir = overrides.pop("data_dir", None)
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="bai-agent-test-", dir="/tmp"))
        data_dir.chmod(0o711)
    values: dict[str, Any] = {
        "agent_id": f"test-{uuid.uuid4().hex[:8]}",
        "data_dir": data_dir,
        # a range of its own, so that concurrent test agents never share a host uid
        "sandbox_uid_base": 1_100_000 + random.randrange(10_000) * 100,
        "sandbox_uid_count": 100,
    }
    values.update(overrides)
    return AgentConfig(**values)


@asynccontextmanager
async def running_agent(**overrides: Any) -> AsyncIterator[Agent]:
    config = make_config(**overrides)
    agent = Agent(config)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()
        shutil.rmtree(config.data_dir, ignore_errors=True)


def spec(session_id: str | None = None, **fields: Any) -> SandboxSpec:
    values: dict[str, Any] = {
        "session_id": session_id or uuid.uuid4().hex,
        "session_name": "t",
        "environment": "python",
        "resources": {},
    }
    values.update(fields)
    return SandboxSpec(**values)


async def new_session(agent: Agent, **fields: Any) -> str:
    session = spec(**fields)
    await agent.create_session(session)
    return session.session_id


async def run(agent: Agent, session_id: str, code: str, flush_timeout_s: float = 10.0) -> RunResult:
    """Run ``code`` and follow it with ``continue`` until it stops being "continued";
    returns the last response with the console of all of them merged."""
    result = await agent.execute(
        ExecRequest(session_id=session_id, mode="query", code=code, flush_timeout_s=flush_timeout_s)
    )
    console = list(result.console)
    for _ in range(10_000):
        if result.status != "continued":
            break
        result = await agent.execute(
            ExecRequest(session_id=session_id, mode="continue", run_id=result.run_id, flush_timeout_s=flush_timeout_s)
        )
        console += result.console
    return result.model_copy(update={"console": console})


def text_of(result: RunResult, stream: str) -> str:
    return "".join(data for kind, data in result.console if kind == stream and isinstance(data, str))


def stdout_of(result: RunResult) -> str:
    return text_of(result, "stdout")


def stderr_of(result: RunResult) -> str:
    return text_of(result, "stderr")


def sandbox_of(agent: Agent, session_id: str) -> LocalSandbox | DockerSandbox:
    """The sandbox behind one of ``agent``'s sessions, on either backend: the parts both
    have (``cgroup``, ``runner_pid``, ``scratch_disk``, ``host``) are read through it by the
    tests that run on both (``pytest.mark.backends``)."""
    assert isinstance(agent.backend, (LocalBackend, DockerBackend))
    return agent.backend.sandboxes[session_id]
