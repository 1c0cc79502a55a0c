"""A compromised sandbox (or a runner of another version) writes what it likes on the
runner socket: the agent's end (bai.agent.session.RunnerConnection) must refuse every
frame that is not a message of the protocol, field types included, without a
traceback into the event loop and without acting on it: the session ends with the
reason, and the run in progress ends with it on stderr.

The runner here is the test, on the other end of a socketpair (tests/fake_runner.py):
a session's own code cannot easily take the runner's socket over, and what matters
is what the agent does with the frames, whoever sends them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fake_runner import FakeBackend, FakeSandbox, no_gone

from bai.agent.agent import Agent
from bai.agent.session import Session
from bai.common.agent_rpc import ExecRequest, SandboxSpec
from bai.common.errors import SessionCreationFailed
from bai.runner import protocol as p


@pytest.fixture(autouse=True)
def close_fake_sandboxes() -> Iterator[None]:
    yield
    FakeSandbox.close_all()


SPEC = SandboxSpec(session_id="s1", session_name="s1", environment="python", resources={})


class Gone:
    """The session's on_gone: the reason, once it is reported."""

    def __init__(self) -> None:
        self.reason: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def __call__(self, session: Session, reason: str) -> None:
        self.reason.set_result(reason)


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler (a traceback out of a protocol
    callback would): the tests assert it stays empty."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    yield errors
    loop.set_exception_handler(None)


async def connected(gone: Gone | None = None) -> tuple[Session, FakeSandbox]:
    """A session whose (fake) runner has said Ready."""
    sandbox = FakeSandbox(SPEC.session_id)
    session = Session(SPEC, sandbox, max_backlog=2**20, output_limit=2**20, on_gone=gone or no_gone)
    sandbox.ready()
    await session.connect(timeout_s=10)
    return session, sandbox


async def started_run(session: Session, sandbox: FakeSandbox) -> str:
    """A query the runner has received (the test answers for it)."""
    result = asyncio.ensure_future(
        session.execute(ExecRequest(session_id="s1", mode="query", code="1", flush_timeout_s=30))
    )
    execute = await sandbox.receive()
    assert isinstance(execute, p.Execute)
    sandbox.send(p.Output(run_id=execute.run_id, stream="stdout", data="started\n"))
    sandbox.send(p.Finished(run_id=execute.run_id, exit_code=0))
    assert (await result).console == [("stdout", "started\n")]
    return execute.run_id


HOSTILE_FRAMES = {
    "a string for an int": {"type": "finished", "run_id": "RUN", "exit_code": "0"},
    "a bool for an int": {"type": "finished", "run_id": "RUN", "exit_code": True},
    "an int past 64 bits": {"type": "finished", "run_id": "RUN", "exit_code": 2**80},
    "a float that is no number": {"type": "finished", "run_id": "RUN", "exit_code": 0, "wall_ms": float("inf")},
    "a list for a str": {"type": "output", "run_id": ["RUN"], "stream": "stdout", "data": "x"},
    "a dict for a str": {"type": "output", "run_id": "RUN", "stream": "stdout", "data": {"a": 1}},
    "a lone surrogate": {"type": "output", "run_id": "RUN", "stream": "stdout", "data": "\ud800"},
    "a missing field": {"type": "output", "run_id": "RUN", "stream": "stdout"},
    "an extra field": {"type": "output", "run_id": "RUN", "stream": "stdout", "data": "x", "pid": 1},
    "a list of ints for a list of str": {"type": "completions", "items": [1, 2]},
    "a str for a bool": {"type": "waiting-input", "run_id": "RUN", "password": "yes"},
    "null for a required str": {"type": "pty-closed", "pty_id": None, "exit_code": 0},
    "an unknown type": {"type": "become-root"},
    "no type": {"run_id": "RUN"},
}


@pytest.mark.parametrize("frame", HOSTILE_FRAMES.values(), ids=HOSTILE_FRAMES.keys())
async def test_a_frame_of_the_wrong_shape_ends_the_session_with_the_reason(
    frame: dict[str, Any], loop_errors: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    gone = Gone()
    session, sandbox = await connected(gone)
    run_id = await started_run(session, sandbox)
    second = asyncio.ensure_future(
        session.execute(ExecRequest(session_id="s1", mode="query", code="2", flush_timeout_s=30))
    )
    execute = await sandbox.receive()
    body = {key: execute.run_id if value == "RUN" else value for key, value in frame.items()}
    sandbox.send(p.Output(run_id=execute.run_id, stream="stdout", data="before\n"))  # valid: dispatched
    sandbox.send_frame(body)
    sandbox.send(p.Finished(run_id=execute.run_id, exit_code=0))  # after the bad frame: never read
    sandbox.exited.set_result(0)  # a real runner exits when its socket is cut
    reason = await asyncio.wait_for(gone.reason, 10)
    assert reason.startswith("the runner broke the protocol: "), reason
    result = await second
    assert result.status == "finished" and result.exit_code == 137  # ended by the agent, not by the frame
    assert result.console == [("stdout", "before\n"), ("stderr", f"[bai] {reason}\n")]
    assert session.gone_reason == reason and run_id != execute.run_id
    assert sandbox.runner.recv(1) == b""  # the agent cut the connection
    assert any("the runner is cut off" in record.message for record in caplog.records)
    assert loop_errors == []


async def test_bytes_that_are_no_json_object_end_the_session(loop_errors: list[dict[str, Any]]) -> None:
    for payload in (b"\xff\xfe", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000, b'{"type": "output", '):
        gone = Gone()
        _, sandbox = await connected(gone)
        sandbox.send_frame(payload)
        sandbox.exited.set_result(0)
        assert (await asyncio.wait_for(gone.reason, 10)).startswith("the runner broke the protocol: ")
    assert loop_errors == []


async def test_a_frame_over_the_size_limit_is_refused_before_it_is_read(loop_errors: list[dict[str, Any]]) -> None:
    gone = Gone()
    _, sandbox = await connected(gone)
    sandbox.runner.sendall(p.HEADER.pack(p.MAX_FRAME + 1))  # no payload follows: it is never awaited
    sandbox.exited.set_result(0)
    assert "over the limit" in await asyncio.wait_for(gone.reason, 10)
    assert loop_errors == []


async def test_a_valid_message_out_of_place_is_dropped_and_the_session_goes_on(
    loop_errors: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """A message meant for the runner, and the end of a run that is not the current one,
    change nothing: the next run works."""
    session, sandbox = await connected()
    sandbox.send(p.Execute(run_id="x", code="import os"))
    sandbox.send(p.Finished(run_id="not-a-run", exit_code=3))
    with caplog.at_level(logging.WARNING):
        await started_run(session, sandbox)
    assert session.gone_reason is None and session.runner_connected()
    assert any("unexpected execute" in record.message for record in caplog.records)
    assert loop_errors == []
    session.detach()
    with pytest.raises(ConnectionError):  # the agent's end is closed
        await sandbox.receive()


@pytest.mark.parametrize("announced", [p.PROTOCOL_VERSION + 1, 0, "1", None])
async def test_a_runner_of_another_protocol_version_is_refused_at_start(announced: Any) -> None:
    sandbox = FakeSandbox(SPEC.session_id)
    session = Session(SPEC, sandbox, max_backlog=2**20, output_limit=2**20, on_gone=no_gone)
    sandbox.ready(protocol=announced)
    with pytest.raises(SessionCreationFailed) as failed:
        await session.connect(timeout_s=30)  # fails at once: the timeout is never reached
    assert f"this agent speaks version {p.PROTOCOL_VERSION}" in failed.value.message
    assert sandbox.runner.recv(1) == b""


async def test_a_newer_runner_with_fields_this_agent_does_not_know_is_refused_for_its_version() -> None:
    sandbox = FakeSandbox(SPEC.session_id)
    session = Session(SPEC, sandbox, max_backlog=2**20, output_limit=2**20, on_gone=no_gone)
    sandbox.send_frame({"type": "ready", "engine": "python", "language_version": "3", "protocol": 7, "gpu": True})
    with pytest.raises(SessionCreationFailed, match="the runner speaks protocol version 7; this agent speaks"):
        await session.connect(timeout_s=30)


async def test_the_agent_refuses_a_session_whose_runner_speaks_another_version(tmp_path: Any) -> None:
    """Through Agent.create_session: the client gets SessionCreationFailed with the
    versions, the sandbox is destroyed and the agent keeps no session."""
    from agent_sandbox import make_config

    backend = FakeBackend(
        make_config(data_dir=tmp_path, pool_size=0), on_create=lambda sandbox: sandbox.ready(protocol=99)
    )
    agent = Agent(backend.config, backend=backend)
    await agent.start()
    try:
        with pytest.raises(SessionCreationFailed, match="the runner speaks protocol version 99"):
            await agent.create_session(SPEC)
        assert agent.sessions == {} and backend.sandboxes["s1"].destroyed
    finally:
        await agent.stop()
