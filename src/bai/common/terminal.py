"""``Terminal``: one interactive shell in a session, as the manager sees it.

The agent makes one per ``open_terminal`` (a pty in the sandbox, bai.agent.terminals);
the manager's terminal WebSocket (API.md section 6) drives it. Output is pulled,
never pushed: a reader that does not call ``read`` stops the shell's output at the
runner (a bounded window), so a slow or absent client grows no buffer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

MAX_ROWS = MAX_COLS = 10000


class Terminal(ABC):
    #: the shell's exit code once ``read`` has returned None (128+N: killed by signal N;
    #: -1: it could not start, ``message`` says why)
    exit_code: int | None = None
    message: str = ""

    @abstractmethod
    async def read(self) -> bytes | None:
        """The next bytes the shell's programs wrote; None once the terminal is closed."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Type ``data`` (keys, pasted text, ``\\x03`` for Ctrl-C) into the terminal."""

    @abstractmethod
    async def resize(self, rows: int, cols: int) -> None: ...

    @abstractmethod
    async def close(self) -> None:
        """Hang up: SIGHUP to the shell's process group. Idempotent."""
