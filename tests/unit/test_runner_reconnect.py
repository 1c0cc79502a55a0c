"""The runner of a container (``--connect PATH --reconnect SECONDS``) when its agent goes
away without a Shutdown: it keeps the session (the REPL's state, its processes), interrupts
the run no one is left to read, connects again when a new agent listens, and says Ready
again. Without ``--reconnect``, after a Shutdown, or past the window, it exits."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_client import BOOT, SRC, RunnerClient
from runner_fixtures import GRACE, python

from bai.runner.protocol import Output, Ready, Shutdown

__all__ = ["python"]  # the fixture, from runner_fixtures


class Agent:
    """The agent's side: a listening socket at ``path``, closed and made again at will."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = self._listen()
        self.connections: list[socket.socket] = []

    def _listen(self) -> socket.socket:
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(1)
        listener.settimeout(10)
        return listener

    def accept(self, proc: subprocess.Popen[bytes]) -> RunnerClient:
        conn, _ = self.listener.accept()
        self.connections.append(conn)
        client = RunnerClient(conn, proc)
        ready = client.recv(timeout=10)
        assert isinstance(ready, Ready), ready
        client.ready = ready
        return client

    def crash(self, client: RunnerClient) -> None:
        """The agent process dies: its connection and listener close (the socket's name stays)."""
        client.sock.close()
        self.listener.close()

    def restart(self) -> None:
        self.listener = self._listen()


def spawn(python: str, path: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [python, "-I", "-c", BOOT % str(SRC), "--connect", str(path), "--engine", "python",
             "--interrupt-grace", str(GRACE), *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(tmp_path / "runner.sock")
    yield agent
    agent.listener.close()
    for conn in agent.connections:
        conn.close()


def test_a_new_agent_finds_the_session_as_it_was(python: str, agent: Agent, tmp_path: Path) -> None:
    proc = spawn(python, agent.path, tmp_path / "log", "--reconnect", "10")
    try:
        client = agent.accept(proc)
        assert client.run("x = 41; import os; pid = os.getpid()").exit_code == 0
        agent.crash(client)
        # it noticed, and retries while nobody listens (the old socket name refuses)
        assert _logged(tmp_path / "log", "the agent went away")
        assert proc.poll() is None
        agent.restart()
        again = agent.accept(proc)
        assert again.ready == client.ready
        result = again.run("print(x + 1, os.getpid() == pid)")
        assert result.stdout == "42 True\n"
    finally:
        proc.kill()
        proc.wait()
    assert "the agent went away" in (tmp_path / "log").read_text()


def _logged(log: Path, line: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in log.read_text():
            return True
        time.sleep(0.01)
    return False


def test_a_run_in_progress_when_the_agent_goes_is_interrupted(python: str, agent: Agent, tmp_path: Path) -> None:
    proc = spawn(python, agent.path, tmp_path / "log", "--reconnect", "10")
    try:
        client = agent.accept(proc)
        client.start_run("import time\nprint('started', flush=True)\nwhile True: time.sleep(0.05)")
        client.wait_output("started")
        agent.crash(client)
        time.sleep(GRACE + 0.5)
        agent.restart()
        again = agent.accept(proc)
        result = again.run("print('free')")  # the REPL is not busy: the old run was interrupted
        assert result.stdout == "free\n"
        assert not [m for m in result.messages if isinstance(m, Output) and "started" in m.data]
    finally:
        proc.kill()
        proc.wait()


def test_without_reconnect_or_after_shutdown_the_runner_exits(python: str, agent: Agent, tmp_path: Path) -> None:
    plain = spawn(python, agent.path, tmp_path / "log")
    client = agent.accept(plain)
    agent.crash(client)
    assert plain.wait(10) == 0
    agent.restart()
    told = spawn(python, agent.path, tmp_path / "log", "--reconnect", "10")
    client = agent.accept(told)
    client.send(Shutdown())
    client.sock.close()
    assert told.wait(10) == 0


def test_past_the_window_the_runner_gives_up(python: str, agent: Agent, tmp_path: Path) -> None:
    proc = spawn(python, agent.path, tmp_path / "log", "--reconnect", "0.5")
    client = agent.accept(proc)
    agent.crash(client)
    started = time.monotonic()
    assert proc.wait(10) == 0
    assert 0.4 < time.monotonic() - started < 5
    assert "no agent came back" in (tmp_path / "log").read_text()


def test_reconnect_needs_connect(python: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [python, "-I", "-c", BOOT % str(SRC), "--fd", "0", "--reconnect", "5"], capture_output=True, timeout=30
    )
    assert done.returncode != 0 and b"--reconnect needs --connect" in done.stderr
