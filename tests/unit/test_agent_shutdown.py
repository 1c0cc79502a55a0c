"""Agent.stop destroys every session; one whose destroy fails is logged with its
session and error (what it could not release, a cgroup or a mount, outlives the
agent), and the others are destroyed all the same."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_sandbox import make_config
from fake_runner import FakeBackend, FakeSandbox, failing_destroy

from bai.agent.agent import Agent
from bai.common.agent_rpc import SandboxSpec


@pytest.fixture(autouse=True)
def close_fake_sandboxes() -> Iterator[None]:
    yield
    FakeSandbox.close_all()


def spec(session_id: str) -> SandboxSpec:
    return SandboxSpec(session_id=session_id, session_name=session_id, environment="python", resources={})


async def test_a_destroy_that_fails_at_shutdown_is_logged_with_its_session_and_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend(make_config(data_dir=tmp_path, pool_size=0), on_create=lambda sandbox: sandbox.ready())
    backend.destroy_errors["stuck"] = failing_destroy("stuck")
    agent = Agent(backend.config, backend=backend)
    await agent.start()
    await agent.create_session(spec("stuck"))
    await agent.create_session(spec("fine"))
    with caplog.at_level(logging.ERROR, logger="bai.agent.agent"):
        await agent.stop()
    failures = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(failures) == 1, [record.getMessage() for record in caplog.records]
    message = failures[0].getMessage()
    assert "session stuck: not destroyed at shutdown" in message
    assert "cannot remove the cgroup of stuck: Device or resource busy" in message
    assert failures[0].exc_info is not None  # with its traceback
    assert backend.sandboxes["fine"].destroyed and agent.sessions == {}
