"""``bai shell SESSION`` end to end: the command runs on a pty of the test's own, as
it would in a user's terminal; keys are typed on the pty's master side."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer

pytestmark = pytest.mark.sandbox

BAI = [sys.executable, "-m", "bai.client.cli.main"]


@pytest.fixture
def server(bai_server: RunningServer) -> RunningServer:
    """The run's embedded server (tests/conftest.py): a broken conftest fails these tests."""
    return bai_server


@pytest.fixture
def name(server: Any) -> Iterator[str]:
    session_name = f"sh-{uuid.uuid4().hex[:8]}"
    started = subprocess.run(
        [*BAI, "run", "python", "-c", "x = 1", "--name", session_name],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    yield session_name
    subprocess.run([*BAI, "rm", session_name], env=server.env, capture_output=True, timeout=60, check=False)


class LocalTerminal:
    """A pty standing for the user's terminal, ``bai shell`` running on its slave side."""

    def __init__(self, server: Any, session: str, rows: int = 30, cols: int = 90) -> None:
        self.master, self.slave = os.openpty()
        self.set_size(rows, cols)
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(
            [*BAI, "shell", session],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            env=server.env,
            start_new_session=True,
        )
        self.seen = b""

    def set_size(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, needle: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {needle!r} in {self.seen[-400:]!r}"
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                self.seen += os.read(self.master, 65536)
        return self.seen

    def raw(self) -> bool:
        return not termios.tcgetattr(self.slave)[3] & termios.ICANON

    def wait_raw(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.raw():
            assert time.monotonic() < deadline and self.proc.poll() is None, self.seen
            if select.select([self.master], [], [], 0.1)[0]:
                self.seen += os.read(self.master, 65536)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def test_bai_shell_types_resizes_interrupts_and_restores_the_terminal(server: Any, name: str) -> None:
    term = LocalTerminal(server, name)
    try:
        term.wait_raw()
        term.type("echo hi-$((4*5)); stty size\n")
        term.read_until(b"30 90")
        assert b"hi-20" in term.seen
        # the remote shell waits for its own terminal to take the new size, then says so
        term.type('until [ "$(stty size)" = "40 100" ]; do sleep 0.05; done; echo resized-$((5*8))\n')
        term.set_size(40, 100)
        term.proc.send_signal(signal.SIGWINCH)  # the kernel sends it to a terminal's foreground job
        term.read_until(b"resized-40")
        # the foreground job says it runs (the process that then becomes the sleep)
        term.type("sh -c 'echo sleeping-$((2+2)); exec sleep 3600'\n")
        term.read_until(b"sleeping-4")
        term.type("\x03")  # raw mode: a byte for the remote shell, no SIGINT here
        term.type("echo back-$((3+4))\n")
        term.read_until(b"back-7")  # only once the hour's sleep was interrupted
        assert term.proc.poll() is None
        term.type("exit 7\n")
        assert term.proc.wait(timeout=20) == 7
        assert termios.tcgetattr(term.slave) == term.before
    finally:
        term.close()


def test_a_lost_session_ends_bai_shell_and_restores_the_terminal(server: Any, name: str) -> None:
    term = LocalTerminal(server, name)
    try:
        term.wait_raw()
        term.type("echo up-$((2*3))\n")
        term.read_until(b"up-6")
        subprocess.run([*BAI, "rm", name], env=server.env, capture_output=True, timeout=60, check=True)
        code = term.proc.wait(timeout=20)
        assert code != 0
        assert termios.tcgetattr(term.slave) == term.before
    finally:
        term.close()


def test_bai_shell_of_an_unknown_session_fails_cleanly(server: Any) -> None:
    term = LocalTerminal(server, "no-such-session")
    try:
        assert term.proc.wait(timeout=30) == 1
        term.read_until(b"error:")
        assert termios.tcgetattr(term.slave) == term.before
    finally:
        term.close()
