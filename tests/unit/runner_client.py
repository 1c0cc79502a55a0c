"""A synchronous test client for the in-sandbox runner (bai.runner).

``RunnerClient.start`` launches the runner as a real subprocess the way the agent
does (``python -I -c ... --fd N --engine python``, the socket passed with pass_fds)
and speaks the frame protocol to it. Run as a script, it measures the Execute →
Finished round trip of ``1+1``:

    .venv/bin/python tests/unit/runner_client.py [PYTHON] [N]
"""

from __future__ import annotations

import contextlib
import glob
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from bai.runner.frames import FrameSplitter  # noqa: E402
from bai.runner.protocol import (  # noqa: E402
    Execute,
    Failure,
    Finished,
    Input,
    Message,
    Output,
    Ready,
    Shutdown,
    WaitingInput,
    decode,
    encode,
)

BOOT = "import sys; sys.path.insert(0, %r); from bai.runner.main import main; main()"


def interpreters() -> list[tuple[str, str | None]]:
    """(id, path or None if missing): the venv's, Debian's and a 3.9 interpreter."""
    py39 = sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3"))
    return [
        ("venv", sys.executable),
        ("debian", "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else None),
        ("py39", py39[-1] if py39 else None),
    ]


@dataclass
class RunResult:
    finished: Finished
    messages: list[Message] = field(default_factory=list)  # all before Finished, in order

    @property
    def exit_code(self) -> int:
        return self.finished.exit_code

    def text(self, stream: str) -> str:
        return "".join(m.data for m in self.messages if isinstance(m, Output) and m.stream == stream)

    @property
    def stdout(self) -> str:
        return self.text("stdout")

    @property
    def stderr(self) -> str:
        return self.text("stderr")

    def merged(self) -> list[tuple[str, str]]:
        """Output as (stream, text), adjacent chunks of one stream joined."""
        out: list[tuple[str, str]] = []
        for m in self.messages:
            if isinstance(m, Output):
                if out and out[-1][0] == m.stream:
                    out[-1] = (m.stream, out[-1][1] + m.data)
                else:
                    out.append((m.stream, m.data))
        return out

    def of_type(self, cls: type[Any]) -> list[Any]:
        return [m for m in self.messages if isinstance(m, cls)]


class RunnerClient:
    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        self.sock = sock
        self.proc = proc
        self._splitter = FrameSplitter()
        self._ready: list[bytes] = []
        self._runs = 0
        self.ready: Ready | None = None

    @classmethod
    def start(
        cls,
        python: str,
        log_path: Path | str = os.devnull,
        *args: str,
        cwd: str | None = None,
        user: int | None = None,
        src: Path = SRC,
        boot_prefix: str = "",
    ) -> RunnerClient:
        ours, theirs = socket.socketpair()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [
                    python,
                    "-I",
                    "-c",
                    boot_prefix + BOOT % str(src),
                    "--fd",
                    str(theirs.fileno()),
                    "--engine",
                    "python",
                    *args,
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=cwd,
                user=user,
            )
        theirs.close()
        client = cls(ours, proc)
        ready = client.recv(timeout=30)
        if not isinstance(ready, Ready):
            client.close()  # do not leak the process and the socket into later tests
            raise AssertionError(f"the runner did not start: {ready!r}")
        client.ready = ready
        return client

    def __enter__(self) -> RunnerClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def send(self, message: Message) -> None:
        self.sock.sendall(encode(message))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = 20.0) -> Message | None:
        """The next message; None once the runner closed its end. TimeoutError if none comes."""
        deadline = time.monotonic() + timeout
        while not self._ready:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError(f"no message from the runner within {timeout:.1f} s")
            data = self.sock.recv(65536)
            if not data:
                return None
            payloads, error = self._splitter.feed(data)
            assert error is None, error
            self._ready.extend(payloads)
        return decode(self._ready.pop(0))

    def expect(self, cls: type[Any], timeout: float = 20.0) -> Any:
        message = self.recv(timeout)
        assert isinstance(message, cls), f"expected {cls.__name__}, got {message!r}"
        return message

    def start_run(self, code: str, run_id: str | None = None) -> str:
        self._runs += 1
        run_id = run_id or f"run-{self._runs}"
        self.send(Execute(run_id=run_id, code=code))
        return run_id

    def collect(
        self, run_id: str, inputs: list[str] | None = None, timeout: float = 20.0, until: Any = None
    ) -> RunResult:
        """Messages up to ``run_id``'s Finished; WaitingInput is answered from ``inputs``."""
        pending = list(inputs or [])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            assert message is not None, "the runner closed the socket during the run"
            if isinstance(message, Finished) and message.run_id == run_id:
                return RunResult(message, messages)
            messages.append(message)
            if isinstance(message, WaitingInput) and pending:
                self.send(Input(run_id=run_id, text=pending.pop(0)))

    def run(self, code: str, inputs: list[str] | None = None, timeout: float = 20.0) -> RunResult:
        return self.collect(self.start_run(code), inputs, timeout)

    def wait_output(self, needle: str, timeout: float = 20.0) -> list[Message]:
        """Read until an Output containing ``needle``; returns what was read."""
        seen: list[Message] = []
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            assert message is not None
            seen.append(message)
            if isinstance(message, Output) and needle in message.data:
                return seen
            assert not isinstance(message, (Finished, Failure)), (message, seen)

    def close(self) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send(Shutdown())
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sock.close()
        return self.proc.returncode


def benchmark(python: str, count: int) -> float:
    """Median microseconds of an Execute('1+1') → Finished round trip."""
    with RunnerClient.start(python) as client:
        for _ in range(200):  # warm up
            client.run("1+1")
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            client.run("1+1")
            samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return samples[len(samples) // 2]


if __name__ == "__main__":
    interpreter = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    print(f"1+1 round trip through the runner ({interpreter}): median {benchmark(interpreter, n):.0f} us")
