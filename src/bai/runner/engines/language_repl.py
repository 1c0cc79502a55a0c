"""The repl engine: another language's REPL (R, Node.js, Lua, PHP, Octave, GHCi, Julia,
bash) driven on pipes, its state kept between queries.

The agent sends the REPL's settings from the catalog (``--config``): ``command`` (the
argv), ``sentinel`` (code that prints ``{marker}`` on stdout and on stderr), ``wrap``
(how a query's code is framed, ``{code}``), ``init`` (code sent once at start), ``prompt`` (a regular expression for the
prompts it prints at the start of a line, stripped), ``echo`` (it echoes its input
lines: they are dropped) and ``program`` (``match``, ``source``, ``run``: see below).

A query whose code ``program["match"]`` finds (a regular expression: PHP that opens
with ``<?php``, Haskell that defines ``main``) is a whole program, not REPL input: as
Backend.AI's query mode runs it, the code is written to ``source`` in the working dir
and ``run`` (a shell command) runs it through the runner's StepRunner (interrupt and
exit code as for the command engine); the REPL is not touched, so its state stays.

A query is the wrapped code, a newline, the sentinel with a fresh marker and a newline,
written to the REPL's stdin. The run is done when the marker has ended a line on both
stdout and stderr; those marker lines are not forwarded. Before the first query the
engine sends a sentinel of its own and drops what comes before its markers (banners).

    Interrupt  → SIGINT to the REPL's process group; ``interrupt_grace`` s later, if the
                 run has not ended, SIGKILL and a fresh REPL (state lost); a query
                 queued for a REPL still warming up ends unrun (exit code 130)
    REPL gone  → Finished(engine_restarted=True) if a run was active; a fresh REPL

A query's exit code is 0 (REPLs report errors, they do not exit on them); a REPL that
dies ends its run with the REPL's exit status.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque

from bai.runner.engines.base import Busy, Engine, NotWaiting, Unsupported
from bai.runner.engines.command import write_source
from bai.runner.engines.steps import DRAIN_READS, spawn
from bai.runner.process import describe_exit
from bai.runner.protocol import Completions, Execute, Finished, Output, Ready

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    import signal as _signal
    from typing import Any, Deque, Dict, List, Optional, Pattern

    from bai.runner.engines.base import EngineContext
    from bai.runner.engines.python_child import OutputPipe
    from bai.runner.engines.steps import Process
    from bai.runner.loop import Timer
    from bai.runner.protocol import Complete, Input, Interrupt
else:
    import _signal  # signal.py's C core, loaded at start-up anyway: signal.py adds enums (a ms)

RESPAWN_PAUSE_S = 1.0  # a REPL that dies before its first sentinel is restarted after this pause
WRITE_RETRY_S = 0.01  # stdin full: try the rest again after this long
PENDING_LIMIT = 4096  # characters of a REPL's output between runs kept (then dropped)


def new_marker() -> str:
    return "__bai_%s__" % os.urandom(8).hex()


class LineFilter:
    """One output stream of the REPL: strips prompts at line starts, drops echoed input
    lines, and finds the line that the current marker ends. Text that may still turn
    out to be a prompt or the marker's line is held until it is known."""

    def __init__(self, prompt: Optional[Pattern[str]], echo: Optional[Deque[str]]) -> None:
        self.prompt = prompt
        self.echo = echo
        self.marker = ""
        self.seen = False
        self._pending = ""
        self._at_line_start = True

    def expect(self, marker: str) -> None:
        self.marker = marker
        self.seen = False

    def feed(self, text: str) -> str:
        """What of ``text`` is the user's output (the marker's line excluded)."""
        data, self._pending = self._pending + text, ""
        out: List[str] = []
        while data and not self.seen:
            end = data.find("\n") + 1
            line, data = (data[:end], data[end:]) if end else (data, "")
            if not end and self._hold(line):
                self._pending = line
                break
            out.append(self._line(line, complete=bool(end)))
        if self.seen and data:
            # after the marker: the REPL's own noise until the next query (prompts, the
            # sentinel's value...), dropped then; kept short
            self._pending = data[-PENDING_LIMIT:]
        return "".join(out)

    def discard_pending(self) -> None:
        self._pending = ""
        self._at_line_start = True

    def take_pending(self) -> str:
        data, self._pending = self._pending, ""
        return self._strip(data) if self._at_line_start else data

    def _strip(self, line: str) -> str:
        if self.prompt is None:
            return line
        match = self.prompt.match(line)
        return line[match.end() :] if match else line

    def _hold(self, partial: str) -> bool:
        if not self._at_line_start:
            return bool(self.marker) and self.marker.startswith(partial)
        body = self._strip(partial)
        if body == "" or len(body) < 3 or (bool(self.marker) and self.marker.startswith(body)):
            return True
        echo = self.echo
        return echo is not None and any(line.startswith(body) for line in list(echo)[:2])

    def _line(self, line: str, complete: bool) -> str:
        body = self._strip(line) if self._at_line_start else line
        self._at_line_start = complete
        if not complete:
            return body
        content = body.rstrip("\r\n")
        if self.marker and content.endswith(self.marker):
            self.seen = True
            return content[: -len(self.marker)]
        if self._at_echo(content):
            return ""
        return body

    def _at_echo(self, content: str) -> bool:
        echo = self.echo
        if not echo:
            return False
        for index in range(min(len(echo), 2)):
            if echo[index] == content:
                for _ in range(index + 1):
                    echo.popleft()
                return True
        return False


class ReplProcess:
    """The REPL's process, its filters, and what waits to be written to its stdin."""

    def __init__(self, process: Process, prompt: Optional[Pattern[str]], echo: bool) -> None:
        self.process = process
        self.echo: Optional[Deque[str]] = deque() if echo else None
        self.filters = {"stdout": LineFilter(prompt, self.echo), "stderr": LineFilter(prompt, None)}
        self.to_write = b""
        self.write_timer: Optional[Timer] = None
        self.warm = False  # its start-up sentinel came back

    def expect(self, marker: str) -> None:
        for line_filter in self.filters.values():
            line_filter.expect(marker)

    @property
    def done(self) -> bool:
        return all(line_filter.seen for line_filter in self.filters.values())


class ActiveRun:
    __slots__ = ("interrupt_timer", "line_open", "run_id", "started")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.started = time.monotonic()
        self.interrupt_timer: Optional[Timer] = None
        self.line_open = False  # the last output forwarded did not end a line


class ReplEngine(Engine):
    name = "repl"

    def __init__(self, context: EngineContext) -> None:
        super().__init__(context)
        config: Dict[str, Any] = context.config
        self.command: List[str] = [str(part) for part in config.get("command") or []]
        self.sentinel = str(config.get("sentinel", ""))
        self.wrap = str(config.get("wrap") or "{code}")
        prompt = config.get("prompt")
        self.prompt = re.compile(prompt) if prompt else None
        self.echo = bool(config.get("echo", False))
        self.init = str(config.get("init") or "")
        self.version = str(config.get("version", ""))
        program = config.get("program") or {}
        self.program = re.compile(program["match"]) if program.get("match") else None
        self.program_source = str(program.get("source", ""))
        self.program_run = str(program.get("run", ""))
        self._repl: Optional[ReplProcess] = None
        self._run: Optional[ActiveRun] = None
        self._queued: Optional[Execute] = None  # a query that came before the REPL was warm
        self._respawn: Optional[Timer] = None

    @property
    def busy(self) -> bool:
        return self._run is not None or self._queued is not None

    def start(self) -> Ready:
        if not self.command or "{marker}" not in self.sentinel:
            raise SystemExit("the repl engine needs --config with a command and a sentinel")
        self._spawn()
        return Ready(engine=self.name, language_version=self.version)

    # -- agent messages -----------------------------------------------------------------

    def execute(self, message: Execute) -> None:
        if self.busy:
            raise Busy("a run is in progress", message.run_id)
        if message.mode != "query":
            raise Unsupported("the repl engine runs mode 'query' here, not %r" % message.mode, message.run_id)
        if self.program is not None and self.program.search(message.code):
            self._run_program(message)
            return
        if self._repl is None:
            self._spawn()
        repl = self._repl
        assert repl is not None
        if not repl.warm:
            self._queued = message
            return
        self._begin(repl, message)

    def _run_program(self, message: Execute) -> None:
        """A whole program: written to its file and run as a script (module docstring)."""
        steps = self.context.steps
        if steps is None or not self.program_source or not self.program_run:
            raise Unsupported("this REPL cannot run a whole program", message.run_id)
        write_source(self.program_source, message.code, message.run_id)
        steps.start(
            Execute(
                run_id=message.run_id, code=message.code, source=self.program_source, steps=[["run", self.program_run]]
            ),
            batch=False,
        )

    def provide_input(self, message: Input) -> None:
        raise NotWaiting("the %s REPL does not take input" % (self.command[0] if self.command else "repl"))

    def interrupt(self, message: Interrupt) -> None:
        """SIGINT to the REPL for a run in progress (SIGKILL after the grace); a query still
        waiting for the REPL to warm up ends at once, unrun: an interrupt always ends the
        run within the grace (what the runner waits for before it reconnects, main.py)."""
        run, repl = self._run, self._repl
        if run is None:
            queued, self._queued = self._queued, None
            if queued is not None:
                self.context.emit(Finished(run_id=queued.run_id, exit_code=128 + _signal.SIGINT))
            return
        if repl is None:
            return
        repl.process.signal_group(_signal.SIGINT)
        if run.interrupt_timer is None:
            run.interrupt_timer = self.context.loop.call_later(
                self.context.interrupt_grace, lambda: self._interrupt_expired(run)
            )

    def complete(self, message: Complete) -> None:
        self.context.emit(Completions(items=[]))

    def child_exited(self, pid: int, status: int) -> None:
        repl = self._repl
        if repl is not None and pid == repl.process.pid:
            repl.process.status = status
            self._lost(repl)

    def close(self) -> None:
        repl, self._repl = self._repl, None
        if repl is not None:
            repl.process.signal_group(_signal.SIGKILL)
            repl.process.wait()
            self._release(repl)

    # -- the REPL -----------------------------------------------------------------------

    def _spawn(self) -> None:
        if self._respawn is not None:
            self._respawn.cancel()
            self._respawn = None
        try:
            process = spawn(self.command, self.context.after_fork, with_stdin=True)
        except OSError as exc:
            self._fail_start("cannot start %s: %s" % (self.command[0], exc))
            return
        repl = self._repl = ReplProcess(process, self.prompt, self.echo)
        for pipe in process.pipes:
            self.context.loop.add_reader(pipe.fd, lambda pipe=pipe: self._on_output(repl, pipe))  # type: ignore[misc]
        marker = new_marker()
        repl.expect(marker)
        init = self.init + "\n" if self.init else ""
        self._write(repl, init + self.sentinel.format(marker=marker) + "\n")

    def _fail_start(self, why: str) -> None:
        queued, self._queued = self._queued, None
        if queued is not None:
            self.context.emit(Output(run_id=queued.run_id, stream="stderr", data=why + "\n"))
            self.context.emit(Finished(run_id=queued.run_id, exit_code=127, engine_restarted=True))
        self._respawn = self.context.loop.call_later(RESPAWN_PAUSE_S, self._spawn)

    def _begin(self, repl: ReplProcess, message: Execute) -> None:
        self._run = ActiveRun(message.run_id)
        for line_filter in repl.filters.values():
            line_filter.discard_pending()
        marker = new_marker()
        repl.expect(marker)
        code = self.wrap.format(code=message.code.rstrip("\n"))
        sentinel = self.sentinel.format(marker=marker)
        if repl.echo is not None:
            repl.echo.clear()
            repl.echo.extend([*code.split("\n"), sentinel])
        self._write(repl, code + "\n" + sentinel + "\n")

    def _write(self, repl: ReplProcess, text: str) -> None:
        repl.to_write += text.encode("utf-8", "surrogateescape")
        self._flush_stdin(repl)

    def _flush_stdin(self, repl: ReplProcess) -> None:
        repl.write_timer = None
        if repl is not self._repl or repl.process.stdin is None:
            return
        try:
            written = os.write(repl.process.stdin, repl.to_write)
        except BlockingIOError:
            written = 0
        except OSError:  # the REPL closed its stdin: its exit will be noticed
            repl.to_write = b""
            return
        repl.to_write = repl.to_write[written:]
        if repl.to_write:
            repl.write_timer = self.context.loop.call_later(WRITE_RETRY_S, lambda: self._flush_stdin(repl))

    def _on_output(self, repl: ReplProcess, pipe: OutputPipe) -> None:
        if repl is not self._repl:
            return
        text = pipe.read()
        if text:
            self._filtered(repl, pipe.stream, text)
        if not pipe.open:
            self.context.loop.remove_reader(pipe.fd)

    def _filtered(self, repl: ReplProcess, stream: str, text: str) -> None:
        out = repl.filters[stream].feed(text)
        if out and repl.warm:
            self._forward(stream, out)
        if repl.done:
            self._sentinel_done(repl)

    def _sentinel_done(self, repl: ReplProcess) -> None:
        if not repl.warm:
            repl.warm = True
            queued, self._queued = self._queued, None
            if queued is not None:
                self._begin(repl, queued)
            return
        self._finish(0)

    def _forward(self, stream: str, text: str) -> None:
        run = self._run
        if run is not None:  # between runs: a REPL's own noise (prompts); dropped
            run.line_open = not text.endswith("\n")
            self.context.emit(Output(run_id=run.run_id, stream=stream, data=text))

    def _finish(self, exit_code: int, restarted: bool = False, note: str = "") -> None:
        run, self._run = self._run, None
        if run is None:
            return
        if note:
            text = ("\n" if run.line_open else "") + note
            self.context.emit(Output(run_id=run.run_id, stream="stderr", data=text))
        if run.interrupt_timer is not None:
            run.interrupt_timer.cancel()
        wall_ms = round((time.monotonic() - run.started) * 1000.0, 3)
        self.context.emit(Finished(run_id=run.run_id, exit_code=exit_code, wall_ms=wall_ms, engine_restarted=restarted))

    # -- death and restart --------------------------------------------------------------

    def _drain(self, repl: ReplProcess) -> None:
        for pipe in repl.process.pipes:
            for _ in range(DRAIN_READS):
                text = pipe.read()
                if text is None:
                    break
                if text:
                    self._filtered(repl, pipe.stream, text)
            if self._run is not None:
                rest = repl.filters[pipe.stream].take_pending() + pipe.flush()
                if rest:
                    self._forward(pipe.stream, rest)

    def _lost(self, repl: ReplProcess) -> None:
        repl.process.signal_group(_signal.SIGKILL)
        self._drain(repl)
        exit_code, how = describe_exit(repl.process.wait())
        name = self.command[0]
        note = "the %s process %s; its state is lost and a fresh one was started\n" % (name, how)
        self._finish(exit_code, restarted=True, note=note)
        queued, self._queued = self._queued, None
        if queued is not None:  # it died before it could take its first query
            self.context.emit(Output(run_id=queued.run_id, stream="stderr", data=note))
            self.context.emit(Finished(run_id=queued.run_id, exit_code=exit_code, engine_restarted=True))
        self._replace(repl, delay=0.0 if repl.warm else RESPAWN_PAUSE_S)

    def _interrupt_expired(self, run: ActiveRun) -> None:
        repl = self._repl
        if self._run is not run or repl is None:
            return
        repl.process.signal_group(_signal.SIGKILL)
        repl.process.wait()
        note = (
            "the run did not stop within %g s of the interrupt, so the %s process was killed; "
            "its state is lost and a fresh one was started\n" % (self.context.interrupt_grace, self.command[0])
        )
        self._finish(128 + _signal.SIGKILL, restarted=True, note=note)
        self._replace(repl)

    def _replace(self, repl: ReplProcess, delay: float = 0.0) -> None:
        if self._repl is repl:
            self._repl = None
        self._release(repl)
        if delay:
            self._respawn = self.context.loop.call_later(delay, self._spawn)
        else:
            self._spawn()

    def _release(self, repl: ReplProcess) -> None:
        if repl.write_timer is not None:
            repl.write_timer.cancel()
        for pipe in repl.process.pipes:
            self.context.loop.remove_reader(pipe.fd)
        repl.process.close()
