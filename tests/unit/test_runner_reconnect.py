"""The runner of a container (``--connect PATH --reconnect SECONDS``) when its agent goes
away without a Shutdown: it keeps the session (the REPL's state, its processes), interrupts
the run no one is left to read, connects again when a new agent listens, and says Ready
again. Without ``--reconnect``, after a Shutdown, or past the window, it exits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_client import BOOT, SRC, RunnerClient
from runner_fixtures import GRACE, python

from bai.runner.protocol import Message, Output, Ready, Shutdown
from tests.waiting import wait_for

__all__ = ["python"]  # the fixture, from runner_fixtures


class Agent:
    """The agent's side: a listening socket at ``path``, closed and made again at will."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = self._listen()
        self.connections: list[socket.socket] = []
        self.runners: list[subprocess.Popen[bytes]] = []

    def spawn(self, python: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
        """A runner that connects to this agent; the fixture ends it (and its REPL) after the test."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [python, "-I", "-c", BOOT % str(SRC), "--connect", str(self.path), "--engine", "python",
                 "--interrupt-grace", str(GRACE), *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        self.runners.append(proc)
        return proc

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


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(tmp_path / "runner.sock")
    yield agent
    agent.listener.close()
    for conn in agent.connections:
        conn.close()
    for proc in agent.runners:
        _end(proc)


def _end(runner: subprocess.Popen[bytes]) -> None:
    """Kill a runner that is still there, and its REPL first: a REPL busy with a run
    outlives its runner (it notices the runner's end only when idle)."""
    children: list[str] = []
    with contextlib.suppress(FileNotFoundError):  # it has exited
        children = Path(f"/proc/{runner.pid}/task/{runner.pid}/children").read_text().split()
    if runner.poll() is None:
        for child in children:  # each REPL leads its own process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(child), signal.SIGKILL)
        runner.kill()
    runner.wait()


def test_a_new_agent_finds_the_session_as_it_was(python: str, agent: Agent, tmp_path: Path) -> None:
    proc = agent.spawn(python, tmp_path / "log", "--reconnect", "10")
    client = agent.accept(proc)
    assert client.run("x = 41; import os; pid = os.getpid()").exit_code == 0
    agent.crash(client)
    # it noticed, and retries while nobody listens (the old socket name refuses)
    wait_for(lambda: "the agent went away" in (tmp_path / "log").read_text(), timeout=10)
    assert proc.poll() is None
    agent.restart()
    again = agent.accept(proc)
    assert again.ready == client.ready
    result = again.run("print(x + 1, os.getpid() == pid)")
    assert result.stdout == "42 True\n"


def test_a_run_in_progress_when_the_agent_goes_is_interrupted(python: str, agent: Agent, tmp_path: Path) -> None:
    proc = agent.spawn(python, tmp_path / "log", "--reconnect", "10")
    client = agent.accept(proc)
    ended = tmp_path / "ended"
    client.start_run(
        "import os, time\ntry:\n    print('pid %d started' % os.getpid(), flush=True)\n"
        f"    while True: time.sleep(0.05)\nfinally:\n    open({str(ended)!r}, 'w').close()"
    )
    repl_pid = int(_output_after(client.wait_output(" started"), "pid"))
    agent.crash(client)
    # the run saw its interrupt (its finally ran) or, past the grace, its REPL was killed
    wait_for(lambda: ended.exists() or not _alive(repl_pid), timeout=10, what="the run's end")
    agent.restart()
    again = agent.accept(proc)
    result = again.run("print('free')")  # the REPL is not busy: the old run was interrupted
    assert result.stdout == "free\n", (result, (tmp_path / "log").read_text())
    assert not [m for m in result.messages if isinstance(m, Output) and "started" in m.data]


def test_a_run_the_agent_sent_as_it_went_is_interrupted_with_the_state_kept(
    python: str, agent: Agent, tmp_path: Path
) -> None:
    """The runner reads the Execute, then the end of the socket: the interrupt comes
    before the run's code has started, and still interrupts it (no kill, no state lost)."""
    proc = agent.spawn(python, tmp_path / "log", "--reconnect", "10")
    client = agent.accept(proc)
    client.run("kept = 1")
    client.start_run("import time\nwhile True: time.sleep(0.05)")
    agent.crash(client)
    agent.restart()
    again = agent.accept(proc)
    result = again.run("print(kept)")
    assert result.stdout == "1\n" and not result.finished.engine_restarted, result


def test_a_new_agent_finds_the_interrupted_run_over(python: str, agent: Agent, tmp_path: Path) -> None:
    """A run that outlives its interrupt (its ``finally`` will not end) is killed at the
    grace's end before the runner connects again: the new agent finds the REPL free, and
    reads nothing of a run it never started (neither its output nor its Finished)."""
    proc = agent.spawn(python, tmp_path / "log", "--reconnect", "10")
    client = agent.accept(proc)
    client.start_run(
        "import time\ntry:\n    print('started', flush=True)\n    while True: time.sleep(0.05)\n"
        "finally:\n    print('cleaning up')\n    while True:\n        try: time.sleep(0.05)\n"
        "        except KeyboardInterrupt: pass",
        run_id="old",
    )
    client.wait_output("started")
    agent.crash(client)
    agent.restart()  # at once: the old run cannot have ended, only its REPL's death ends it
    again = agent.accept(proc)
    again.start_run("print('free')", run_id="new")
    first = again.recv(timeout=10)  # not Failure('a run is in progress'), nor the old run's
    assert isinstance(first, Output) and first.run_id == "new", first
    result = again.collect("new", timeout=10)
    assert first.data + result.stdout == "free\n", result
    assert [m for m in result.messages if getattr(m, "run_id", "new") != "new"] == []


def _output_after(messages: list[Message], word: str) -> str:
    text = "".join(m.data for m in messages if isinstance(m, Output))
    return text.split(word, 1)[1].split()[0]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs still (a zombie counts as gone: it ran its last)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_without_reconnect_or_after_shutdown_the_runner_exits(python: str, agent: Agent, tmp_path: Path) -> None:
    plain = agent.spawn(python, tmp_path / "log")
    client = agent.accept(plain)
    agent.crash(client)
    assert plain.wait(10) == 0
    agent.restart()
    told = agent.spawn(python, tmp_path / "log", "--reconnect", "10")
    client = agent.accept(told)
    client.send(Shutdown())
    client.sock.close()
    assert told.wait(10) == 0


def test_past_the_window_the_runner_gives_up(python: str, agent: Agent, tmp_path: Path) -> None:
    proc = agent.spawn(python, tmp_path / "log", "--reconnect", "0.5")
    client = agent.accept(proc)
    agent.crash(client)
    started = time.monotonic()
    assert proc.wait(10) == 0
    assert time.monotonic() - started > 0.4  # it waited out the window (wait() bounds a hang)
    assert "no agent came back" in (tmp_path / "log").read_text()


def test_reconnect_needs_connect(python: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [python, "-I", "-c", BOOT % str(SRC), "--fd", "0", "--reconnect", "5"], capture_output=True, timeout=30
    )
    assert done.returncode != 0 and b"--reconnect needs --connect" in done.stderr
