"""Shell steps: the commands of a compile-and-run query or of a batch run, one at a time.

The runner cannot read the environment catalog, so the agent sends each command
rendered (``Execute.steps``: ``[name, command]`` pairs). A step runs as
``/bin/sh -c COMMAND`` in the working dir, leader of its own process group, with
stdin on /dev/null and stdout / stderr on pipes streamed to the agent as they are read.

Life cycle of a run (all in the runner's one thread):

    start → spawn the first step; its pipes stream as Output frames
    the step's process is reaped → read both pipes empty, close them, SIGKILL what is
        left of its process group; then, by the step's name:
          "clean", "build" (batch) → StepFinished; a failing build ends the run
          "compile" (query)        → a failure ends the run
        the next step, or Finished with the last step's exit code
    Interrupt → SIGINT to the step's process group, the steps after it are dropped;
        ``interrupt_grace`` s later, SIGKILL

A build's output is held back and dropped when the build succeeds, unless the run asked
for it (``build_log``): a failing build's errors are always shown.
"""

from __future__ import annotations

import contextlib
import os
import time

from bai.runner.engines.base import Busy
from bai.runner.engines.python_child import OutputPipe
from bai.runner.process import describe_exit
from bai.runner.protocol import Finished, Output, StepFinished

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    import signal as _signal
    from typing import Callable, List, NoReturn, Optional, Tuple

    from bai.runner.engines.base import EngineContext
    from bai.runner.loop import Timer
    from bai.runner.protocol import Execute
else:
    import _signal  # signal.py's C core, loaded at start-up anyway: signal.py adds enums (a ms)

SHELL = "/bin/sh"
DRAIN_READS = 16  # as engines/python.py: a pipe holds at most this many reads' worth
HELD_LIMIT = 1 << 20  # characters of a build's output held back; beyond, counted and dropped
BATCH_REPORTED = ("clean", "build")  # batch steps that end with a StepFinished


class Process:
    """A user's command: its pid (also its process group) and its output pipes."""

    def __init__(self, pid: int, stdout: OutputPipe, stderr: OutputPipe, stdin: Optional[int] = None) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin  # the write end of its stdin pipe, when it has one
        self.status: Optional[int] = None

    @property
    def pipes(self) -> Tuple[OutputPipe, OutputPipe]:
        return self.stdout, self.stderr

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def wait(self) -> int:
        if self.status is None:
            try:
                self.status = os.waitpid(self.pid, 0)[1]
            except ChildProcessError:
                self.status = _signal.SIGKILL
        return self.status

    def close(self) -> None:
        for fd in (self.stdout.fd, self.stderr.fd, self.stdin):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def spawn(argv: List[str], after_fork: Callable[[], None], with_stdin: bool = False) -> Process:
    """Fork and exec ``argv`` in a new process group, stdout and stderr on pipes (and
    stdin on a pipe when ``with_stdin``, else /dev/null). Its signals are reset to their
    defaults: the runner ignores SIGINT, and Python ignores SIGPIPE."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if with_stdin else (-1, -1)
    pid = os.fork()
    if pid == 0:
        _exec_child(argv, after_fork, in_r, out_w, err_w)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # also done in the child: whichever runs first wins the race
    for fd in (out_w, err_w, in_r):
        if fd >= 0:
            os.close(fd)
    if in_w >= 0:
        os.set_blocking(in_w, False)
    return Process(pid, OutputPipe(out_r, "stdout"), OutputPipe(err_r, "stderr"), in_w if in_w >= 0 else None)


def _exec_child(argv: List[str], after_fork: Callable[[], None], stdin: int, stdout: int, stderr: int) -> NoReturn:
    try:
        os.setpgid(0, 0)
        after_fork()
        for signum in (_signal.SIGINT, _signal.SIGPIPE, _signal.SIGQUIT, _signal.SIGTERM):
            _signal.signal(signum, _signal.SIG_DFL)
        if stdin < 0:
            stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.execvp(argv[0], argv)
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            os.write(2, ("bai runner: cannot run %s: %s\n" % (argv[0], exc)).encode())
    finally:
        os._exit(127)


class StepRun:
    """One run's steps and the state of the current one."""

    def __init__(self, run_id: str, steps: List[List[str]], batch: bool, build_log: bool) -> None:
        self.run_id = run_id
        self.steps = [(str(step[0]), str(step[1])) for step in steps]
        self.batch = batch
        self.build_log = build_log
        self.started = time.monotonic()
        self.name = ""
        self.process: Optional[Process] = None
        self.held: List[Tuple[str, str]] = []
        self.held_size = 0
        self.held_dropped = 0
        self.exit_code = 0
        self.interrupt_timer: Optional[Timer] = None

    @property
    def holding(self) -> bool:
        return self.batch and self.name == "build" and not self.build_log


class StepRunner:
    """Runs the steps of at most one run at a time (see the module docstring)."""

    def __init__(self, context: EngineContext) -> None:
        self.context = context
        self._run: Optional[StepRun] = None

    @property
    def active(self) -> bool:
        return self._run is not None

    def start(self, message: Execute, batch: bool) -> None:
        if self._run is not None:
            raise Busy("a run is in progress", message.run_id)
        self._run = StepRun(message.run_id, message.steps, batch, message.build_log)
        self._next()

    def interrupt(self) -> None:
        run = self._run
        if run is None or run.process is None:
            return
        run.steps = []
        run.process.signal_group(_signal.SIGINT)
        if run.interrupt_timer is None:
            run.interrupt_timer = self.context.loop.call_later(self.context.interrupt_grace, self._interrupt_expired)

    def child_exited(self, pid: int, status: int) -> bool:
        """The loop reaped ``pid``: True when it was the current step's process."""
        run = self._run
        if run is None or run.process is None or run.process.pid != pid:
            return False
        run.process.status = status
        self._step_done(run)
        return True

    def close(self) -> None:
        run, self._run = self._run, None
        if run is not None and run.process is not None:
            run.process.signal_group(_signal.SIGKILL)
            run.process.wait()
            self._release(run.process)

    # -- steps ------------------------------------------------------------------------

    def _next(self) -> None:
        run = self._run
        assert run is not None
        if not run.steps:
            self._finish(run)
            return
        run.name, command = run.steps.pop(0)
        try:
            process = spawn([SHELL, "-c", command], self.context.after_fork)
        except OSError as exc:
            self._emit(run, "stderr", "bai runner: cannot start the %s step: %s\n" % (run.name, exc))
            run.exit_code = 127
            self._finish(run)
            return
        run.process = process
        for pipe in process.pipes:
            self.context.loop.add_reader(pipe.fd, lambda pipe=pipe: self._on_output(process, pipe))  # type: ignore[misc]

    def _on_output(self, process: Process, pipe: OutputPipe) -> None:
        run = self._run
        if run is None or run.process is not process:
            return
        text = pipe.read()
        if text:
            self._emit(run, pipe.stream, text)
        if not pipe.open:
            self.context.loop.remove_reader(pipe.fd)

    def _step_done(self, run: StepRun) -> None:
        process = run.process
        assert process is not None
        for pipe in process.pipes:
            for _ in range(DRAIN_READS):
                text = pipe.read()
                if text is None:
                    break
                if text:
                    self._emit(run, pipe.stream, text)
            rest = pipe.flush()
            if rest:
                self._emit(run, pipe.stream, rest)
        process.signal_group(_signal.SIGKILL)  # what the step left running in the background
        self._release(process)
        run.process = None
        exit_code, _ = describe_exit(process.wait())
        run.exit_code = exit_code
        if run.interrupt_timer is not None:
            run.interrupt_timer.cancel()
            run.interrupt_timer = None
        if run.holding:
            self._release_held(run, show=exit_code != 0)
        if run.batch and run.name in BATCH_REPORTED:
            self.context.emit(StepFinished(run_id=run.run_id, step=run.name, exit_code=exit_code))
        if exit_code != 0 and run.name in ("build", "compile"):
            run.steps = []
        self._next()

    def _release(self, process: Process) -> None:
        for pipe in process.pipes:
            self.context.loop.remove_reader(pipe.fd)
        process.close()

    def _interrupt_expired(self) -> None:
        run = self._run
        if run is not None and run.process is not None:
            run.process.signal_group(_signal.SIGKILL)

    # -- output -----------------------------------------------------------------------

    def _emit(self, run: StepRun, stream: str, text: str) -> None:
        if run.holding:
            if run.held_size + len(text) > HELD_LIMIT:
                run.held_dropped += len(text)
            else:
                run.held.append((stream, text))
                run.held_size += len(text)
            return
        self.context.emit(Output(run_id=run.run_id, stream=stream, data=text))

    def _release_held(self, run: StepRun, show: bool) -> None:
        held, run.held = run.held, []
        run.held_size = 0
        dropped, run.held_dropped = run.held_dropped, 0
        if not show:
            return
        for stream, text in held:
            self.context.emit(Output(run_id=run.run_id, stream=stream, data=text))
        if dropped:
            note = "\n[bai] %d characters of the build's output were dropped\n" % dropped
            self.context.emit(Output(run_id=run.run_id, stream="stderr", data=note))

    def _finish(self, run: StepRun) -> None:
        self._run = None
        wall_ms = round((time.monotonic() - run.started) * 1000.0, 3)
        self.context.emit(Finished(run_id=run.run_id, exit_code=run.exit_code, wall_ms=wall_ms))
