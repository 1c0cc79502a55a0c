"""``bai shell SESSION``: an interactive shell in a session, in this terminal.

The local terminal goes to raw mode, so every key (Ctrl-C, Ctrl-Z, arrows...) is
sent to the remote shell as it is typed, and its output is written back as it
comes; the remote terminal follows this one's size (at start and on SIGWINCH).
The command ends when the remote shell exits (its exit status is ours) or the
connection is lost, and the terminal's settings are put back whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import click

from bai.client.cli.context import CliState, pass_state
from bai.client.config import APIConfig
from bai.client.session import AsyncSession
from bai.client.stream import TerminalStream

EXIT_INTERRUPTED = 130
READ_SIZE = 4096
DEFAULT_SIZE = (24, 80)


def terminal_size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on ``fd``; 24 x 80 where it is not a terminal."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return DEFAULT_SIZE
    return (size.lines or DEFAULT_SIZE[0], size.columns or DEFAULT_SIZE[1])


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode for the block, its settings restored after
    (on an exception too); nothing happens where ``fd`` is not a terminal."""
    if not os.isatty(fd):
        yield
        return
    import termios  # noqa: PLC0415 (POSIX only: imported where used)
    import tty  # noqa: PLC0415

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            written = 0
        view = view[written:]


class _Keyboard:
    """This terminal's keys and size changes, queued for the sender."""

    def __init__(self, stdin: int, stdout: int) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        self.paused = False
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> _Keyboard:
        self._loop.add_reader(self.stdin, self._on_key)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            self._loop.add_signal_handler(signal.SIGWINCH, self._on_resize)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.remove_reader(self.stdin)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            self._loop.remove_signal_handler(signal.SIGWINCH)

    def _on_key(self) -> None:
        try:
            data = os.read(self.stdin, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # end of a piped stdin: the remote shell goes on until it exits
            self._loop.remove_reader(self.stdin)
            return
        self.queue.put_nowait(data)  # never full here: reading stops when it fills
        if self.queue.full():
            self._loop.remove_reader(self.stdin)  # the sender catches up, then reads again
            self.paused = True

    def _on_resize(self) -> None:
        if not self.queue.full():
            self.queue.put_nowait(terminal_size(self.stdout))

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._loop.add_reader(self.stdin, self._on_key)


async def _send_keys(keyboard: _Keyboard, term: TerminalStream) -> None:
    while True:
        item = await keyboard.queue.get()
        if isinstance(item, tuple):
            await term.resize(*item)
        else:
            await term.send(item)
        if keyboard.queue.empty():
            keyboard.resume()


async def _show_output(term: TerminalStream, stdout: int) -> None:
    while (data := await term.read()) is not None:
        _write_all(stdout, data)


async def run_shell(config: APIConfig, session: str, stdin: int = 0, stdout: int = 1) -> int:
    """The shell's exit status (1 if the connection ended before it exited)."""
    async with AsyncSession(config) as api:
        rows, cols = terminal_size(stdout)
        async with api.ComputeSession(session).terminal(rows, cols) as term:
            with raw_mode(stdin), _Keyboard(stdin, stdout) as keyboard:
                sender = asyncio.get_running_loop().create_task(_send_keys(keyboard, term))
                try:
                    await _show_output(term, stdout)
                finally:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await sender  # a lost connection shows in the output's end
        return term.exit_code if term.exit_code is not None else 1


@click.command()
@click.argument("session")
@pass_state
@click.pass_context
def shell(ctx: click.Context, state: CliState, session: str) -> None:
    """Open an interactive shell in SESSION (by name or id).

    Keys go to the remote shell as typed (Ctrl-C interrupts the remote program);
    leave with `exit` or Ctrl-D. The exit status is the remote shell's.
    """
    try:
        code = asyncio.run(run_shell(state.config, session, sys.stdin.fileno(), sys.stdout.fileno()))
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    ctx.exit(code)
