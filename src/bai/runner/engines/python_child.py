"""The runner's handle on one forked REPL child.

The child is a fork of the runner (about 1 ms, against 20 ms for a new interpreter),
leader of its own process group (its pgid is its pid), with fd 0 = /dev/null, fd 1
and fd 2 = pipes read here, two control socketpairs (control.py) and the interrupt
pipe (``ReplChild.interrupt``). Nothing of the
runner survives in it but memory: ``after_fork`` first closes the runner's fds and
resets what the runner set for itself alone (see EngineContext.after_fork). That
memory is shared copy-on-write, which is why the runner imports all the REPL needs
before it forks (engines/python.py) and freezes the collector's view of it (main.py).
"""

from __future__ import annotations

import _socket  # socket.py's C core: socket.py adds enums and selectors, milliseconds per start
import codecs
import contextlib
import os
import sys

from bai.runner.control import RUN_NUMBER_BYTES, decode_control, encode_control
from bai.runner.frames import RECV_SIZE, FrameSplitter
from bai.runner.protocol import ProtocolError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    import signal as _signal
    from typing import Callable, List, NoReturn, Optional

    from bai.runner.protocol import Message

    ChildMain = Callable[[_socket.socket, _socket.socket, int], NoReturn]
else:
    import _signal  # signal.py's C core, loaded at start-up anyway: signal.py adds enums (a ms)

READ_SIZE = 65536


class OutputPipe:
    """The read end of the child's stdout or stderr, decoded as UTF-8 across reads."""

    def __init__(self, fd: int, stream: str) -> None:
        self.fd = fd
        self.stream = stream
        self.open = True
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        os.set_blocking(fd, False)

    def read(self) -> Optional[str]:
        """The text of one read ('' when it ended inside a character), or None when
        the pipe holds nothing now; at end of file ``open`` turns False."""
        if not self.open:
            return None
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self.open = False
            return None
        return self._decoder.decode(data)

    def flush(self) -> str:
        """What is left of a character cut short, as U+FFFD: the run it belongs to is over."""
        return self._decoder.decode(b"", True)


class ControlEnd:
    """The runner's end of a control channel: reads follow the loop, sends block."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self._splitter = FrameSplitter()

    def send(self, message: Message) -> None:
        self.sock.sendall(encode_control(message))

    def receive(self) -> Optional[List[Message]]:
        """The messages that arrived, or None at end of file (the child is gone)."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except OSError:
            data = b""
        if not data:
            return None
        payloads, error = self._splitter.feed(data)
        if error is not None:
            raise ProtocolError(error)
        return [decode_control(payload) for payload in payloads]


class ReplChild:
    def __init__(
        self,
        pid: int,
        stdout: OutputPipe,
        stderr: OutputPipe,
        commands: ControlEnd,
        requests: ControlEnd,
        interrupts: int,
    ) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.commands = commands
        self.requests = requests
        self.status: Optional[int] = None
        self.answered = False  # it has sent something on the command channel
        self.runs = 0  # RunCode commands sent: the number of the latest run
        self._interrupts = interrupts  # the interrupt pipe's write end (non-blocking)

    @classmethod
    def fork(cls, after_fork: Callable[[], None], child_main: ChildMain) -> ReplChild:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        int_r, int_w = os.pipe()
        commands, child_commands = _socket.socketpair()
        requests, child_requests = _socket.socketpair()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        pid = os.fork()
        if pid == 0:
            commands.close()
            requests.close()
            _become_repl(
                after_fork,
                child_main,
                stdout=out_w,
                stderr=err_w,
                parent_fds=[out_r, err_r, int_w],
                commands=child_commands,
                requests=child_requests,
                interrupts=int_r,
            )
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also done in the child: whichever runs first wins the race
        os.close(out_w)
        os.close(err_w)
        os.close(int_r)
        os.set_blocking(int_w, False)
        child_commands.close()
        child_requests.close()
        stdout, stderr = OutputPipe(out_r, "stdout"), OutputPipe(err_r, "stderr")
        return cls(pid, stdout, stderr, ControlEnd(commands), ControlEnd(requests), int_w)

    @property
    def fds(self) -> List[int]:
        return [self.stdout.fd, self.stderr.fd, self.commands.sock.fileno(), self.requests.sock.fileno()]

    def run(self, message: Message) -> None:
        """Send a RunCode: the child's next run, numbered ``runs``."""
        self.runs += 1
        self.commands.send(message)

    def interrupt(self) -> None:
        """SIGINT to the group, for run number ``runs``, whose number goes first down the
        interrupt pipe. The REPL raises KeyboardInterrupt at a SIGINT while a run's code
        runs; one that comes before (the cell is still being read or compiled, or the REPL
        is still starting and ignores SIGINT) is lost as a signal, so the REPL reads the
        pipe as each run starts and interrupts it there if its number is in it. A number
        it finds of an earlier run (a SIGINT sent as that run ended) is ignored."""
        with contextlib.suppress(OSError):  # full (8192 unread interrupts) or closed: the grace still holds
            os.write(self._interrupts, self.runs.to_bytes(RUN_NUMBER_BYTES, "little"))
        self.signal_group(_signal.SIGINT)

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def wait(self) -> int:
        """The child's wait status, reaping it if the loop has not."""
        if self.status is None:
            try:
                self.status = os.waitpid(self.pid, 0)[1]
            except ChildProcessError:
                self.status = _signal.SIGKILL  # reaped elsewhere (not expected): say killed
        return self.status

    def close(self) -> None:
        for fd in (self.stdout.fd, self.stderr.fd, self._interrupts):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.commands.sock.close()
        self.requests.sock.close()


def _become_repl(
    after_fork: Callable[[], None],
    child_main: ChildMain,
    *,
    stdout: int,
    stderr: int,
    parent_fds: List[int],
    commands: _socket.socket,
    requests: _socket.socket,
    interrupts: int,
) -> NoReturn:
    try:
        os.setpgid(0, 0)
        after_fork()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        for fd in {devnull, stdout, stderr, *parent_fds}:
            if fd > 2:
                os.close(fd)
        child_main(commands, requests, interrupts)
    except BaseException:
        with contextlib.suppress(BaseException):
            import traceback  # noqa: PLC0415 (only when the REPL fails to start)

            traceback.print_exc()
    finally:
        os._exit(70)
