"""The python engine: a persistent REPL child (repl.py) driven from the runner.

Run life cycle, all in the runner's one thread:

    Execute → RunCode to the child; output pipes stream as Output frames as read
    child Fence      → read both pipes empty, FenceDone  (keeps stdout/stderr order)
    child AskInput   → read both pipes empty, WaitingInput to the agent; Input → InputGiven
    Interrupt        → SIGINT to the child's process group (ReplChild.interrupt: also
                       when it comes before the run's code has started); if the run
                       has not ended ``interrupt_grace`` s later, SIGKILL the group and restart
    child RunDone    → read both pipes empty, Finished
    child gone (control EOF, reaped, garbage on a control channel)
                     → Finished(engine_restarted=True) if a run was active; fresh child

Invariant: no Output of a run follows its Finished. Output read while no run is
active (a background thread, a subprocess that outlived its run) waits in a backlog
and opens the next run.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time

# Imported here, before the REPL child is forked, although only the child uses it: the
# pages of what is imported before the fork are shared by the two processes, while
# each import in the child would copy a megabyte or two of them (reference counts
# written all over the heap), per session.
from bai.runner import repl
from bai.runner.control import (
    AskInput,
    CompleteCode,
    CompleteDone,
    Fence,
    FenceDone,
    InputGiven,
    RunCode,
    RunDone,
    SetEnviron,
)
from bai.runner.engines.base import Busy, Engine, NotWaiting, Unsupported
from bai.runner.engines.python_child import ReplChild
from bai.runner.process import describe_exit
from bai.runner.protocol import (
    Completions,
    Finished,
    Output,
    ProtocolError,
    Ready,
    Record,
    WaitingInput,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    import signal as _signal
    from typing import Any, Callable, Dict, List, Optional, Tuple

    from bai.runner.engines.base import EngineContext
    from bai.runner.engines.python_child import OutputPipe
    from bai.runner.loop import Timer
    from bai.runner.protocol import Complete, Execute, Input, Interrupt, Message
else:
    import _signal  # signal.py's C core, loaded at start-up anyway: signal.py adds enums (a ms)

# A drain reads each pipe until it is empty, but at most this many reads: enough for
# all a pipe can hold (1 MiB at most), while a subprocess that writes without end
# cannot hold the runner in a drain forever.
DRAIN_READS = 16
# A child that dies before it has answered anything (a broken start) is restarted after
# this pause, or at the next Execute, so that it cannot spin the runner in a fork loop.
RESPAWN_PAUSE_S = 1.0
_TOKEN = r"[\w.]*$"  # compiled at the first completion, not at every start


class ActiveRun(Record):
    run_id: str
    started: float
    waiting_seq: Optional[int] = None
    interrupt_timer: Optional[Timer] = None
    at_line_start: bool = True


class Backlog:
    """Output read between runs, held for the next run; beyond ``limit`` characters, counted and dropped."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self._limit = limit
        self._chunks: List[Tuple[str, str]] = []
        self._size = 0
        self._dropped = 0

    def add(self, stream: str, text: str) -> None:
        if self._size + len(text) > self._limit:
            self._dropped += len(text)
            return
        self._chunks.append((stream, text))
        self._size += len(text)

    def take(self) -> List[Tuple[str, str]]:
        chunks = self._chunks
        if self._dropped:
            chunks.append(("stderr", "[%d characters of output between runs were dropped]\n" % self._dropped))
        self._chunks, self._size, self._dropped = [], 0, 0
        return chunks


def completion_text(message: Complete) -> str:
    """The dotted name before the cursor: ``line`` (or row ``row`` of ``code``; the end
    of ``code`` when row and col are both 0) cut at ``col`` when col > 0."""
    line = message.line
    if not line:
        lines = message.code.split("\n")
        row = len(lines) - 1 if message.row <= 0 and message.col <= 0 else message.row
        line = lines[min(max(row, 0), len(lines) - 1)]
    if message.col > 0:
        line = line[: message.col]
    match = re.search(_TOKEN, line)
    return match.group(0) if match else ""


def python_version() -> str:
    """What ``platform.python_version()`` says, without importing platform (a
    millisecond per start): the version at the head of ``sys.version``, with a patch
    level of 0 added when it has none."""
    text = sys.version
    end = 0
    while end < len(text) and ((text[end].isascii() and text[end].isalnum()) or text[end] in "._+"):
        end += 1
    parts = text[:end].split(".")
    if len(parts) == 2:
        parts.append("0")
    return ".".join(parts)


class PythonEngine(Engine):
    name = "python"

    def __init__(self, context: EngineContext) -> None:
        super().__init__(context)
        self._child: Optional[ReplChild] = None
        self._respawn: Optional[Timer] = None
        self._run: Optional[ActiveRun] = None
        self._backlog = Backlog()
        self._completions_pending = 0
        self._on_command: Dict[type, Callable[[Any], None]] = {
            RunDone: self._run_done,
            CompleteDone: self._completions_done,
        }
        self._on_request: Dict[type, Callable[[Any], None]] = {Fence: self._fence, AskInput: self._ask_input}

    @property
    def busy(self) -> bool:
        return self._run is not None

    def start(self) -> Ready:
        self._spawn()
        return Ready(engine=self.name, language_version=python_version())

    # -- agent messages -------------------------------------------------------------

    def execute(self, message: Execute) -> None:
        if self._run is not None:
            raise Busy("a run is in progress", message.run_id)
        if message.mode != "query":
            reason = "the python engine runs mode 'query' only, not %r" % message.mode
            raise Unsupported(reason, message.run_id)
        if self._child is None:
            self._spawn()
        self._run = ActiveRun(message.run_id, time.monotonic())
        for stream, text in self._backlog.take():
            self._forward(stream, text)
        self._send_command(RunCode(message.code, message.script))

    def provide_input(self, message: Input) -> None:
        run = self._run
        if run is None or run.waiting_seq is None or run.run_id != message.run_id:
            raise NotWaiting("no run is waiting for input", message.run_id)
        seq, run.waiting_seq = run.waiting_seq, None
        self._answer(InputGiven(seq, message.text))

    def interrupt(self, message: Interrupt) -> None:
        run, child = self._run, self._child
        if run is None or child is None:
            return
        child.interrupt()
        if run.interrupt_timer is None:
            run.interrupt_timer = self.context.loop.call_later(
                self.context.interrupt_grace, lambda: self._interrupt_expired(run)
            )

    def complete(self, message: Complete) -> None:
        text = completion_text(message)
        if self._run is not None or self._child is None or not text:
            self.context.emit(Completions(items=[]))
            return
        self._completions_pending += 1
        self._send_command(CompleteCode(text))

    def configure(self, environ: Dict[str, str]) -> None:
        if self._child is not None:  # a later child inherits the runner's os.environ
            self._send_command(SetEnviron(dict(environ)))

    def child_exited(self, pid: int, status: int) -> None:
        if self._child is not None and pid == self._child.pid:
            self._child.status = status
            self._lost()

    def close(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.signal_group(_signal.SIGKILL)
            child.wait()
            child.close()

    # -- the child ------------------------------------------------------------------

    def _spawn(self) -> None:
        if self._respawn is not None:
            self._respawn.cancel()
            self._respawn = None
        child = self._child = ReplChild.fork(self.context.after_fork, repl.main)
        loop = self.context.loop
        loop.add_reader(child.stdout.fd, lambda: self._on_output(child, child.stdout))
        loop.add_reader(child.stderr.fd, lambda: self._on_output(child, child.stderr))
        loop.add_reader(child.commands.sock.fileno(), lambda: self._on_control(child, True))
        loop.add_reader(child.requests.sock.fileno(), lambda: self._on_control(child, False))

    def _on_output(self, child: ReplChild, pipe: OutputPipe) -> None:
        if child is not self._child:
            return
        text = pipe.read()
        if text:
            self._forward(pipe.stream, text)
        if not pipe.open:
            self.context.loop.remove_reader(pipe.fd)

    def _on_control(self, child: ReplChild, commands: bool) -> None:
        if child is not self._child:
            return
        end, handlers = (child.commands, self._on_command) if commands else (child.requests, self._on_request)
        try:
            messages = end.receive()
        except ProtocolError:
            messages = None
        if messages is None:
            self._lost()
            return
        child.answered = child.answered or (commands and bool(messages))
        for message in messages:
            handler = handlers.get(type(message))
            if handler is None:
                self._lost()
            elif child is self._child:
                handler(message)
            if child is not self._child:
                return

    def _run_done(self, message: RunDone) -> None:
        self._finish(message.exit_code)

    def _completions_done(self, message: CompleteDone) -> None:
        if self._completions_pending > 0:
            self._completions_pending -= 1
            self.context.emit(Completions(items=message.items))

    def _fence(self, message: Fence) -> None:
        self._drain()
        self._answer(FenceDone(message.seq))

    def _ask_input(self, message: AskInput) -> None:
        self._drain()
        run = self._run
        if run is None:
            self._answer(InputGiven(message.seq, eof=True))
            return
        run.waiting_seq = message.seq
        self.context.emit(WaitingInput(run_id=run.run_id, prompt=message.prompt, password=message.password))

    def _send_command(self, message: Message) -> None:
        child = self._child
        assert child is not None
        try:
            if isinstance(message, RunCode):
                child.run(message)  # numbered, for its interrupts
            else:
                child.commands.send(message)
        except OSError:
            self._lost()

    def _answer(self, message: Message) -> None:
        """A reply on the request channel; if the child is gone, its EOF says so soon."""
        if self._child is not None:
            with contextlib.suppress(OSError):
                self._child.requests.send(message)

    # -- output ---------------------------------------------------------------------

    def _forward(self, stream: str, text: str) -> None:
        run = self._run
        if run is None:
            self._backlog.add(stream, text)
            return
        run.at_line_start = text.endswith("\n")
        self.context.emit(Output(run_id=run.run_id, stream=stream, data=text))

    def _drain(self) -> None:
        """Forward all the pipes hold now (see DRAIN_READS)."""
        if self._child is None:
            return
        for pipe in (self._child.stdout, self._child.stderr):
            for _ in range(DRAIN_READS):
                text = pipe.read()
                if text is None:
                    break
                if text:
                    self._forward(pipe.stream, text)
            if not pipe.open:
                self.context.loop.remove_reader(pipe.fd)

    def _finish(self, exit_code: int, restarted: bool = False, note: str = "") -> None:
        run = self._run
        if run is None:
            return
        self._drain()
        if self._child is not None:
            for pipe in (self._child.stdout, self._child.stderr):
                rest = pipe.flush()
                if rest:
                    self._forward(pipe.stream, rest)
        if note:
            self._forward("stderr", ("" if run.at_line_start else "\n") + note)
        if run.interrupt_timer is not None:
            run.interrupt_timer.cancel()
        self._run = None
        wall_ms = round((time.monotonic() - run.started) * 1000.0, 3)
        self.context.emit(Finished(run_id=run.run_id, exit_code=exit_code, wall_ms=wall_ms, engine_restarted=restarted))

    # -- death and restart ----------------------------------------------------------

    def _lost(self) -> None:
        """The child died or broke its channels: end the active run, start afresh."""
        child = self._child
        if child is None:
            return
        child.signal_group(_signal.SIGKILL)  # the user's subprocesses go with it
        exit_code, how = describe_exit(child.wait())
        note = "the Python process died: %s; its state is lost and a fresh one was started\n" % how
        broken_start = self._run is None and not child.answered
        self._finish(exit_code, restarted=True, note=note)
        self._replace_child(delay=RESPAWN_PAUSE_S if broken_start else 0.0)

    def _interrupt_expired(self, run: ActiveRun) -> None:
        child = self._child
        if self._run is not run or child is None:
            return
        child.signal_group(_signal.SIGKILL)
        child.wait()
        note = (
            "the run did not stop within %g s of the interrupt, so the Python process was killed; "
            "its state is lost and a fresh one was started\n" % self.context.interrupt_grace
        )
        self._finish(128 + _signal.SIGKILL, restarted=True, note=note)
        self._replace_child()

    def _replace_child(self, delay: float = 0.0) -> None:
        child, self._child = self._child, None
        if child is not None:
            for fd in child.fds:
                self.context.loop.remove_reader(fd)
            child.close()
        for _ in range(self._completions_pending):
            self.context.emit(Completions(items=[]))
        self._completions_pending = 0
        if delay:
            self._respawn = self.context.loop.call_later(delay, self._spawn)
        else:
            self._spawn()
