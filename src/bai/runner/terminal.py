"""Interactive terminals: a shell on a pseudo-terminal, driven by the agent.

``PtyOpen`` forks ``/bin/bash -i`` (``/bin/sh -i`` where there is no bash) in
/home/work as a new session whose controlling terminal is the slave side of a new
pty; it is the session's own process, in its sandbox, under its cgroup and seccomp
filter. The master side is read in the runner's loop and forwarded as
``PtyOutput``; ``PtyInput`` is written to it, ``PtyResize`` sets its window size
(the kernel sends SIGWINCH to the foreground job).

Flow control: the runner reads at most ``WINDOW`` bytes ahead of the agent's
``PtyAck``s, then stops reading the master; a ``yes`` flood then blocks in its
write, in the sandbox, and no buffer grows anywhere. Input that the shell does not
read is held up to ``INPUT_LIMIT`` bytes and retried; beyond, it is dropped.

``PtyClose`` (or the runner's end) hangs the terminal up: the master is closed and
the shell's process group gets SIGHUP, then SIGKILL after ``KILL_AFTER_S``.

The modules a terminal needs (fcntl, termios) are imported when the first opens:
runner start-up time matters, and most sessions never open one.
"""

from __future__ import annotations

import binascii  # base64.py's C core: base64.py imports re
import contextlib
import os
import struct

from bai.runner.process import describe_exit
from bai.runner.protocol import PtyAck, PtyClose, PtyClosed, PtyInput, PtyOpen, PtyOutput, PtyResize

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    import signal as _signal
    from typing import Callable, Dict, List, NoReturn, Optional, Tuple

    from bai.runner.loop import Loop, Timer
    from bai.runner.protocol import Message
else:
    import _signal

WINDOW = 256 * 1024  # bytes of output sent and not yet acknowledged, at most
READ_SIZE = 16 * 1024
INPUT_LIMIT = 64 * 1024  # bytes of input held while the shell does not read
INPUT_RETRY_S = 0.02
KILL_AFTER_S = 2.0
MAX_TERMINALS = 16
MAX_DIMENSION = 10000
SHELLS = ("/bin/bash", "/bin/sh")
HOME = "/home/work"


class TerminalError(Exception):
    pass


def _winsize(rows: int, cols: int) -> bytes:
    if not (0 < rows <= MAX_DIMENSION and 0 < cols <= MAX_DIMENSION):
        raise TerminalError("rows and cols must be between 1 and %d" % MAX_DIMENSION)
    return struct.pack("HHHH", rows, cols, 0, 0)


class Terminal:
    """One shell on one pty: its pid (also its session and process group) and master fd."""

    def __init__(self, pty_id: str, pid: int, fd: int) -> None:
        self.pty_id = pty_id
        self.pid = pid
        self.fd = fd  # -1 once closed
        self.unacked = 0
        self.reading = False
        self.pending = b""  # input the pty did not take yet
        self.retry: Optional[Timer] = None
        self.kill_timer: Optional[Timer] = None
        self.status: Optional[int] = None


class Terminals:
    """The runner's terminals, by the agent's ``pty_id``."""

    def __init__(self, loop: Loop, emit: Callable[[Message], None], after_fork: Callable[[], None]) -> None:
        self.loop = loop
        self.emit = emit
        self.after_fork = after_fork
        self._open: Dict[str, Terminal] = {}
        self._by_pid: Dict[int, Terminal] = {}

    # -- messages from the agent ------------------------------------------------

    def open(self, message: PtyOpen) -> None:
        if message.pty_id in self._open:
            self._refuse(message.pty_id, "terminal %r is already open" % message.pty_id)
            return
        if len(self._open) >= MAX_TERMINALS:
            self._refuse(message.pty_id, "at most %d terminals per session" % MAX_TERMINALS)
            return
        try:
            size = _winsize(message.rows, message.cols)
            terminal = self._spawn(message.pty_id, size)
        except (TerminalError, OSError) as exc:
            self._refuse(message.pty_id, "cannot open a terminal: %s" % exc)
            return
        self._open[terminal.pty_id] = terminal
        self._by_pid[terminal.pid] = terminal
        self._start_reading(terminal)

    def input(self, message: PtyInput) -> None:
        terminal = self._open.get(message.pty_id)
        if terminal is None or terminal.fd < 0:
            return
        try:
            data = binascii.a2b_base64(message.data)
        except (ValueError, TypeError):
            return
        room = INPUT_LIMIT - len(terminal.pending)
        terminal.pending += data[: max(0, room)]
        self._flush_input(terminal)

    def resize(self, message: PtyResize) -> None:
        terminal = self._open.get(message.pty_id)
        if terminal is None or terminal.fd < 0:
            return
        import fcntl  # noqa: PLC0415 (start-up time)
        import termios  # noqa: PLC0415

        with contextlib.suppress(TerminalError, OSError):
            fcntl.ioctl(terminal.fd, termios.TIOCSWINSZ, _winsize(message.rows, message.cols))

    def ack(self, message: PtyAck) -> None:
        terminal = self._open.get(message.pty_id)
        if terminal is None:
            return
        terminal.unacked = max(0, terminal.unacked - max(0, message.size))
        if terminal.fd >= 0 and terminal.unacked < WINDOW:
            self._start_reading(terminal)

    def close(self, message: PtyClose) -> None:
        terminal = self._open.get(message.pty_id)
        if terminal is not None:
            self._hang_up(terminal)

    def child_exited(self, pid: int, status: int) -> bool:
        """The loop reaped ``pid``: True when it was a terminal's shell."""
        terminal = self._by_pid.pop(pid, None)
        if terminal is None:
            return False
        terminal.status = status
        self._drain(terminal)
        self._hang_up(terminal)
        self._finish(terminal)
        return True

    def close_all(self) -> None:
        for terminal in list(self._open.values()):
            self._hang_up(terminal)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(terminal.pid, _signal.SIGKILL)

    # -- the shell ------------------------------------------------------------------

    def _spawn(self, pty_id: str, size: bytes) -> Terminal:
        import fcntl  # noqa: PLC0415 (start-up time)
        import termios  # noqa: PLC0415

        master, slave = os.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
            pid = os.fork()
            if pid == 0:
                self._exec_shell(master, slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return Terminal(pty_id, pid, master)

    def _exec_shell(self, master: int, slave: int) -> NoReturn:
        try:
            import fcntl  # noqa: PLC0415
            import termios  # noqa: PLC0415

            self.after_fork()
            os.close(master)
            for terminal in self._open.values():
                if terminal.fd >= 0:
                    os.close(terminal.fd)
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            if slave > 2:
                os.close(slave)
            for signum in (_signal.SIGINT, _signal.SIGPIPE, _signal.SIGQUIT, _signal.SIGTERM, _signal.SIGHUP):
                _signal.signal(signum, _signal.SIG_DFL)
            os.execve(*_shell_command())
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(2, ("bai runner: cannot start a shell: %s\r\n" % exc).encode())
        finally:
            os._exit(127)

    # -- output ---------------------------------------------------------------------

    def _start_reading(self, terminal: Terminal) -> None:
        if not terminal.reading and terminal.fd >= 0:
            terminal.reading = True
            self.loop.add_reader(terminal.fd, lambda: self._on_readable(terminal))

    def _stop_reading(self, terminal: Terminal) -> None:
        if terminal.reading:
            terminal.reading = False
            self.loop.remove_reader(terminal.fd)

    def _on_readable(self, terminal: Terminal) -> None:
        if terminal.fd < 0:
            return
        try:
            data = os.read(terminal.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave fd is closed (the shell and its children are gone)
            data = b""
        if not data:
            self._stop_reading(terminal)
            return
        self._send(terminal, data)
        if terminal.unacked >= WINDOW:
            self._stop_reading(terminal)

    def _send(self, terminal: Terminal, data: bytes) -> None:
        terminal.unacked += len(data)
        self.emit(PtyOutput(pty_id=terminal.pty_id, data=binascii.b2a_base64(data, newline=False).decode("ascii")))

    def _drain(self, terminal: Terminal) -> None:
        """What the shell wrote before it ended, within the window."""
        while terminal.fd >= 0 and terminal.unacked < WINDOW:
            try:
                data = os.read(terminal.fd, READ_SIZE)
            except OSError:
                return
            if not data:
                return
            self._send(terminal, data)

    # -- input ----------------------------------------------------------------------

    def _flush_input(self, terminal: Terminal) -> None:
        terminal.retry = None
        while terminal.pending and terminal.fd >= 0:
            try:
                written = os.write(terminal.fd, terminal.pending)
            except BlockingIOError:
                written = 0
            except OSError:
                terminal.pending = b""
                return
            if written == 0:
                terminal.retry = self.loop.call_later(INPUT_RETRY_S, lambda: self._flush_input(terminal))
                return
            terminal.pending = terminal.pending[written:]

    # -- the end ------------------------------------------------------------------

    def _hang_up(self, terminal: Terminal) -> None:
        if terminal.fd >= 0:
            self._stop_reading(terminal)
            if terminal.retry is not None:
                terminal.retry.cancel()
            os.close(terminal.fd)
            terminal.fd = -1
        if terminal.status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(terminal.pid, _signal.SIGHUP)
            if terminal.kill_timer is None:
                terminal.kill_timer = self.loop.call_later(KILL_AFTER_S, lambda: self._kill(terminal))

    def _kill(self, terminal: Terminal) -> None:
        if terminal.status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(terminal.pid, _signal.SIGKILL)

    def _finish(self, terminal: Terminal) -> None:
        if terminal.kill_timer is not None:
            terminal.kill_timer.cancel()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(terminal.pid, _signal.SIGHUP)  # what the shell left in its group
        self._open.pop(terminal.pty_id, None)
        code, _ = describe_exit(terminal.status if terminal.status is not None else 0)
        self.emit(PtyClosed(pty_id=terminal.pty_id, exit_code=code))

    def _refuse(self, pty_id: str, reason: str) -> None:
        self.emit(PtyClosed(pty_id=pty_id, exit_code=-1, message=reason))


def _shell_command() -> Tuple[str, List[str], Dict[str, str]]:
    """(path, argv, environment) of the interactive shell."""
    path = next((shell for shell in SHELLS if os.access(shell, os.X_OK)), SHELLS[-1])
    env = dict(os.environ)
    env["TERM"] = "xterm-256color"
    env.setdefault("HOME", HOME)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if os.path.isdir(HOME):
        os.chdir(HOME)
    argv: List[str] = [os.path.basename(path), "-i"]
    return path, argv, env
