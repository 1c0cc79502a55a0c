"""The runner's terminals (bai.runner.terminal), outside any sandbox: a real shell
on a real pty, driven through the runner's frame protocol."""

from __future__ import annotations

import base64
import contextlib
import time

from runner_client import RunnerClient
from runner_fixtures import python, runner

from bai.runner.protocol import PtyAck, PtyClose, PtyClosed, PtyInput, PtyOpen, PtyOutput, PtyResize
from bai.runner.terminal import WINDOW

__all__ = ["python", "runner"]  # fixtures, from runner_fixtures


def _type(runner: RunnerClient, pty_id: str, text: str) -> None:
    runner.send(PtyInput(pty_id=pty_id, data=base64.b64encode(text.encode()).decode()))


def _read_until(runner: RunnerClient, pty_id: str, needle: bytes, timeout: float = 10.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        message = runner.recv(timeout=max(0.1, deadline - time.monotonic()))
        assert message is not None, f"no {needle!r} in {seen[-400:]!r}"
        if isinstance(message, PtyOutput) and message.pty_id == pty_id:
            data = base64.b64decode(message.data)
            seen += data
            runner.send(PtyAck(pty_id=pty_id, size=len(data)))
        assert not isinstance(message, PtyClosed), (message, seen[-400:])
    return seen


def _closed(runner: RunnerClient, pty_id: str, timeout: float = 10.0) -> PtyClosed:
    deadline = time.monotonic() + timeout
    while True:
        message = runner.recv(timeout=max(0.1, deadline - time.monotonic()))
        assert message is not None, "the terminal did not close"
        if isinstance(message, PtyOutput):
            runner.send(PtyAck(pty_id=message.pty_id, size=len(base64.b64decode(message.data))))
        if isinstance(message, PtyClosed) and message.pty_id == pty_id:
            return message


def test_a_shell_on_a_pty_echoes_resizes_and_exits(runner: RunnerClient) -> None:
    runner.send(PtyOpen(pty_id="t1", rows=30, cols=100))
    _type(runner, "t1", "echo $((6*7))-$TERM; stty size\n")
    out = _read_until(runner, "t1", b"30 100")
    assert b"42-xterm-256color" in out
    runner.send(PtyResize(pty_id="t1", rows=50, cols=132))
    _type(runner, "t1", "stty size\n")
    _read_until(runner, "t1", b"50 132")
    _type(runner, "t1", "exit 3\n")
    assert _closed(runner, "t1").exit_code == 3


def test_ctrl_c_interrupts_the_foreground_job(runner: RunnerClient) -> None:
    runner.send(PtyOpen(pty_id="t", rows=24, cols=80))
    # the job says it runs (the echo of the typed line shows only "started-$((1+1))"); a ^C
    # that reaches it, sh or the sleep it became, ends it by SIGINT: status 130
    _type(runner, "t", "sh -c 'echo started-$((1+1)); exec sleep 30'\n")
    _read_until(runner, "t", b"started-2")
    _type(runner, "t", "\x03")
    _type(runner, "t", "echo after-$?\n")
    _read_until(runner, "t", b"after-130")  # long before the sleep could end


def test_a_flood_stops_at_the_window_until_acknowledged(runner: RunnerClient) -> None:
    runner.send(PtyOpen(pty_id="f", rows=24, cols=80))
    _type(runner, "f", "yes\n")
    received = 0
    while received < WINDOW:  # yes never stops: its output fills the window, however slow the host
        received += _pty_bytes(runner.recv(timeout=20))
    with contextlib.suppress(TimeoutError):  # then nothing more comes (a slow host only sees less)
        while True:
            received += _pty_bytes(runner.recv(timeout=0.5))
    assert received <= WINDOW + 16 * 1024  # unacknowledged: the runner stopped reading
    runner.send(PtyAck(pty_id="f", size=received))
    _type(runner, "f", "\x03")
    _type(runner, "f", "echo done-$((2+3))\n")
    _read_until(runner, "f", b"done-5")


def _pty_bytes(message: object) -> int:
    return len(base64.b64decode(message.data)) if isinstance(message, PtyOutput) else 0


def test_close_hangs_up_and_bad_requests_are_refused(runner: RunnerClient) -> None:
    runner.send(PtyOpen(pty_id="a", rows=0, cols=80))
    refused = _closed(runner, "a")
    assert refused.exit_code == -1 and "rows" in refused.message
    runner.send(PtyOpen(pty_id="b", rows=24, cols=80))
    runner.send(PtyOpen(pty_id="b", rows=24, cols=80))
    assert "already open" in _closed(runner, "b").message
    _type(runner, "b", "echo ok-$((3*3))\n")
    _read_until(runner, "b", b"ok-9")
    runner.send(PtyClose(pty_id="b"))
    assert _closed(runner, "b").exit_code == 128 + 1  # SIGHUP
    assert runner.run("print(1 + 1)").stdout == "2\n"  # the engine is unaffected
