"""The agent's end of a terminal (bai.agent.terminals): acknowledgements, bounds, the end."""

from __future__ import annotations

import asyncio
import base64

import pytest

from bai.agent.terminals import QUEUE_LIMIT, SessionTerminal, check_size
from bai.common.errors import ExecutionFailed, InvalidRequest
from bai.runner import protocol as p


def _output(data: bytes) -> p.PtyOutput:
    return p.PtyOutput(pty_id="t", data=base64.b64encode(data).decode())


class Runner:
    def __init__(self) -> None:
        self.sent: list[p.Message] = []
        self.gone = False

    def send(self, message: p.Message) -> None:
        if self.gone:
            raise ExecutionFailed("the session's runner is not connected")
        self.sent.append(message)


def _terminal(runner: Runner, forgotten: list[str] | None = None) -> SessionTerminal:
    return SessionTerminal("t", runner.send, (forgotten if forgotten is not None else []).append)


async def test_output_is_acknowledged_as_it_is_read_and_ends_after_the_exit() -> None:
    runner, forgotten = Runner(), []
    terminal = _terminal(runner, forgotten)
    terminal.on_output(_output(b"hello "))
    terminal.on_output(_output(b"world"))
    terminal.on_closed(3)
    assert forgotten == ["t"]
    assert await terminal.read() == b"hello world"
    assert runner.sent == []  # the pty is gone: nothing to acknowledge
    assert await terminal.read() is None
    assert terminal.exit_code == 3


async def test_a_reader_waits_for_output() -> None:
    runner = Runner()
    terminal = _terminal(runner)
    reader = asyncio.ensure_future(terminal.read())
    await asyncio.sleep(0)  # one turn of the loop: the reader runs until it blocks
    assert not reader.done()
    terminal.on_output(_output(b"x"))
    assert await asyncio.wait_for(reader, 1) == b"x"
    assert runner.sent == [p.PtyAck(pty_id="t", size=1)]


async def test_a_runner_that_ignores_the_window_has_its_excess_dropped() -> None:
    runner = Runner()
    terminal = _terminal(runner)
    chunk = b"y" * (256 * 1024)
    for _ in range(10):
        terminal.on_output(_output(chunk))
    assert terminal.dropped == 10 * len(chunk) - QUEUE_LIMIT
    assert len(await terminal.read()) == QUEUE_LIMIT
    bad = p.PtyOutput(pty_id="t", data="%%not base64")
    terminal.on_output(bad)  # ignored, logged


async def test_keys_resize_and_close_reach_the_runner_and_a_gone_runner_ends_it() -> None:
    runner = Runner()
    terminal = _terminal(runner)
    await terminal.write(b"\x03")
    await terminal.resize(40, 100)
    with pytest.raises(InvalidRequest, match="rows"):
        await terminal.resize(0, 100)
    assert runner.sent == [
        p.PtyInput(pty_id="t", data=base64.b64encode(b"\x03").decode()),
        p.PtyResize(pty_id="t", rows=40, cols=100),
    ]
    runner.gone = True
    await terminal.write(b"ls\n")
    assert terminal.closed and terminal.exit_code == -1
    assert await terminal.read() is None
    await terminal.close()  # idempotent


def test_sizes_are_checked() -> None:
    check_size(1, 10000)
    with pytest.raises(InvalidRequest, match="cols"):
        check_size(24, 10001)
