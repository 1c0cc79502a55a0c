"""The REPL child's standard streams and input (runs in the child only).

Invariant: Python-level writes to stdout and stderr reach the agent in the order they
were made, although they travel through two pipes. Every write goes straight to its
fd (1 or 2), unbuffered; a write to the other stream than the last one first sends a
``Fence`` on the request channel and waits for ``FenceDone``, which the runner sends
only after reading both pipes empty. C-level and subprocess writes share the pipes
but not the fence: they keep their order within a stream only.

``input()``, ``sys.stdin`` and ``getpass`` ask the runner for a line (``AskInput``),
which it turns into a ``waiting-input`` frame to the agent.

In a process the user's code forks, the channels are closed (``Requester.forked``):
writes go to the pipes unfenced, and input reads end of file.
"""

from __future__ import annotations

import _thread  # threading's C core: its RLock is threading.RLock, without threading's import
import io
import os
import sys

from bai.runner.control import AskInput, Fence, InputGiven

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional

    from bai.runner.control import Channel
    from bai.runner.protocol import Message


class Requester:
    """The child's side of the request channel, shared by every thread of the user's code."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        # Re-entrant: a signal handler that prints while the main thread waits for a
        # reply nests a request; replies are kept by seq so the outer one still finds its own.
        self._lock = _thread.RLock()
        self._seq = 0
        self._replies: Dict[int, Message] = {}
        self.forked = False

    def ask(self, make: Callable[[int], Message]) -> Message:
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._channel.send(make(seq))
            while seq not in self._replies:
                reply = self._channel.recv()
                if reply is None:  # the runner is gone: so is the session
                    os._exit(1)
                self._replies[getattr(reply, "seq", 0)] = reply
            return self._replies.pop(seq)

    def after_fork(self) -> None:
        self.forked = True
        self._channel.sock.close()


class StreamSwitch:
    """Which fd the user's code wrote last; writing the other one costs a fence."""

    def __init__(self, requester: Requester) -> None:
        self._requester = requester
        self.last = 0

    def before_write(self, fd: int) -> None:
        if fd != self.last:
            if self.last and not self._requester.forked:
                self._requester.ask(Fence)
            self.last = fd


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


class FdBinaryWriter(io.RawIOBase):
    """``sys.stdout.buffer``: bytes straight to the fd, fenced like the text writer."""

    def __init__(self, fd: int, switch: StreamSwitch) -> None:
        super().__init__()
        self._fd = fd
        self._switch = switch

    def write(self, data: Any) -> int:
        data = bytes(data)
        if data:
            self._switch.before_write(self._fd)
            _write_all(self._fd, data)
        return len(data)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """Never closed: the REPL outlives whatever the user's code does to it."""


class FdWriter(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr``: unbuffered UTF-8 text straight to fd 1 / fd 2."""

    def __init__(self, fd: int, name: str, switch: StreamSwitch) -> None:
        super().__init__()
        self._fd = fd
        self._name = name
        self._switch = switch
        self._buffer = FdBinaryWriter(fd, switch)

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        if text:
            self._switch.before_write(self._fd)
            _write_all(self._fd, text.encode("utf-8", "backslashreplace"))
        return len(text)

    @property
    def buffer(self) -> FdBinaryWriter:
        return self._buffer

    encoding = "utf-8"
    errors = "backslashreplace"

    @property
    def name(self) -> str:
        return self._name

    @property
    def mode(self) -> str:
        return "w"

    @property
    def line_buffering(self) -> bool:
        return False

    def reconfigure(self, **options: Any) -> None:
        """Accepted and ignored: the writer is always unbuffered UTF-8."""

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Never closed: see FdBinaryWriter.close."""


class Prompter:
    """``input()``, ``getpass.getpass()`` and the reads of ``sys.stdin``, through the runner."""

    def __init__(self, requester: Requester) -> None:
        self._requester = requester

    def ask_line(self, prompt: str, password: bool = False) -> Optional[str]:
        """The user's line without its newline, or None at end of file."""
        if self._requester.forked:
            return None
        reply = self._requester.ask(lambda seq: AskInput(seq, prompt, password))
        if not isinstance(reply, InputGiven) or reply.eof:
            return None
        return reply.text

    def input(self, prompt: object = "") -> str:
        text = str(prompt)
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
        line = self.ask_line(text)
        if line is None:
            raise EOFError("EOF when reading a line")
        return line

    def getpass(self, prompt: str = "Password: ", stream: Any = None) -> str:
        if prompt:
            sys.stdout.write(prompt)
        line = self.ask_line(prompt, password=True)
        if line is None:
            raise EOFError("EOF when reading a password")
        return line


class InputReader(io.TextIOBase):
    """``sys.stdin``: each read that finds nothing buffered asks the agent for one line."""

    def __init__(self, prompter: Prompter) -> None:
        super().__init__()
        self._prompter = prompter
        self._pending = ""

    def _fill(self) -> bool:
        if not self._pending:
            line = self._prompter.ask_line("")
            if line is None:
                return False
            self._pending = line + "\n"
        return True

    def _take(self, size: int) -> str:
        text = self._pending if size < 0 else self._pending[:size]
        self._pending = self._pending[len(text) :]
        return text

    def readline(self, size: Optional[int] = -1) -> str:  # type: ignore[override]
        if size == 0 or not self._fill():
            return ""
        end = self._pending.find("\n") + 1 or len(self._pending)
        if size is not None and 0 < size < end:
            end = size
        return self._take(end)

    def read(self, size: Optional[int] = -1) -> str:
        if size == 0 or not self._fill():
            return ""
        return self._take(-1 if size is None else size)

    def readlines(self, hint: Optional[int] = -1) -> List[str]:  # type: ignore[override]
        """The lines of one answer: at a prompt, 'until end of file' means 'this line'."""
        return self.read().splitlines(True)

    encoding = "utf-8"

    @property
    def name(self) -> str:
        return "<stdin>"

    @property
    def mode(self) -> str:
        return "r"

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 0

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        """Never closed: ``exit()`` closes sys.stdin, and the next run still reads it."""
