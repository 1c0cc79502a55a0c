"""Run bookkeeping for one session: an I/O-free core (no event loop, no sockets).

The session's async shell (bai.agent.session) feeds it the runner's messages and
the manager's requests and acts on what it returns:

- ``start`` / ``check_continue`` / ``check_input`` validate a request against the
  current run (raising ``InvalidRequest(field="runId")``) and say what to send;
- ``on_output``, ``on_media``, ``on_waiting_input``, ``on_step_finished`` (a batch
  step's end: a response ends there, ``clean-finished`` / ``build-finished``),
  ``on_finished`` record what
  the runner said; ``on_exec_timeout`` and ``add_notice`` record the agent's own;
- ``deliverable`` says whether a waiting ``execute`` should answer now;
- ``take_response`` cuts the next answer, a RunResult (bai.common.wire: the shape the
  manager writes and the client reads, made here once): consecutive chunks of one stream are
  merged into one ``[type, data]`` pair and each stream is capped at
  ``stream_cap`` UTF-8 bytes per response (the rest waits for the next ``continue``);
- ``backlog_bytes`` is what is buffered and not yet delivered, for backpressure;
  after an interrupt (``discard_excess``) output beyond the limit is dropped
  instead, so a runner blocked on a full socket can hear the interrupt;
- each run keeps at most its ``output_limit`` bytes of stdout + stderr: past it the
  rest is dropped as it arrives (so a flood never blocks the runner on backpressure
  nor grows the agent's memory) and one marker line on stderr says so;
- ``record_usage`` takes what the shell measured of an ended run (cgroup figures,
  wall time); the run's ``finished`` / ``exec-timeout`` answers carry it as RunStats,
  with the output figures.

Invariant: at most one run is current; a new query is refused while it is
unfinished; output of any other run id is dropped.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from bai.agent.cgroups import RunUsage
from bai.common.agent_rpc import ConsoleEntry, RunStats
from bai.common.errors import InvalidRequest
from bai.common.status import RunStatus
from bai.common.wire import RunOptions, RunResult

STREAM_CAP = 512 * 1024
OUTPUT_LIMIT = 8 * 2**20  # the default of AgentConfig.output_limit
TEXT_STREAMS = ("stdout", "stderr")

STEP_STATUSES: dict[str, RunStatus] = {"clean": RunStatus.CLEAN_FINISHED, "build": RunStatus.BUILD_FINISHED}


class RunPhase(Enum):
    RUNNING = "running"
    WAITING_INPUT = "waiting-input"
    FINISHED = "finished"


@dataclass
class _Chunk:
    kind: str  # stdout | stderr | media | html | step (the end of a batch step)
    text: str = ""  # the step's name, for a step
    size: int = 0  # UTF-8 bytes of text, for the per-stream cap
    media: list[str] | None = None
    exit_code: int | None = None  # a step's


@dataclass
class Run:
    run_id: str
    phase: RunPhase = RunPhase.RUNNING
    exit_code: int | None = None
    timed_out: bool = False
    is_password: bool = False
    engine_restarted: bool = False
    pending: deque[_Chunk] = field(default_factory=deque)
    pending_bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TEXT_STREAMS, 0))
    input_reported: bool = False  # the current waiting-input was answered to the manager
    drop_beyond: int | None = None  # set by discard_excess: the backlog's hard limit
    dropped: int = 0  # bytes of output dropped over that limit
    output_limit: int = OUTPUT_LIMIT  # stdout + stderr bytes kept for this run
    output_bytes: int = 0  # stdout + stderr bytes the run wrote, dropped ones included
    kept_bytes: int = 0  # of which kept (toward output_limit)
    truncated: bool = False  # output_limit was reached: the rest is dropped
    line_open: bool = False  # the last kept text did not end a line
    stats: RunStats | None = None  # set by record_usage once the run has ended


def new_run_id() -> str:
    return uuid.uuid4().hex


class RunBook:
    """The runs of one session. See the module docstring."""

    def __init__(self, stream_cap: int = STREAM_CAP, output_limit: int = OUTPUT_LIMIT) -> None:
        self.stream_cap = stream_cap
        self.output_limit = output_limit  # per run, unless ``start`` is given another
        self.current: Run | None = None
        self.backlog_bytes = 0

    # -- requests ----------------------------------------------------------

    def start(self, run_id: str | None, output_limit: int | None = None) -> Run:
        """A ``query``: begin a new run, keeping at most ``output_limit`` bytes of its
        output (None: the book's). The caller sends ``Execute(run.run_id, code)``."""
        if self.current is not None and self.current.phase is not RunPhase.FINISHED:
            raise InvalidRequest(
                f"run {self.current.run_id} is still in progress; continue it or interrupt it",
                field="runId",
            )
        self.backlog_bytes = 0
        limit = self.output_limit if output_limit is None else output_limit
        self.current = Run(run_id=run_id or new_run_id(), output_limit=limit)
        return self.current

    def check_continue(self, run_id: str | None) -> Run:
        """A ``continue``: the run must be the current (or just finished) one."""
        return self._matching(run_id)

    def check_input(self, run_id: str | None) -> Run:
        """An ``input``: the run must be waiting for input. The caller sends ``Input``."""
        run = self._matching(run_id)
        if run.phase is not RunPhase.WAITING_INPUT:
            raise InvalidRequest(f"run {run.run_id} is not waiting for input", field="runId")
        run.phase = RunPhase.RUNNING
        run.input_reported = False
        return run

    def _matching(self, run_id: str | None) -> Run:
        run = self.current
        if run is None:
            raise InvalidRequest("no run to continue; start one with a query", field="runId")
        if run_id is not None and run_id != run.run_id:
            raise InvalidRequest(f"unknown run {run_id}; the current run is {run.run_id}", field="runId")
        return run

    # -- runner messages ---------------------------------------------------

    def _live(self, run_id: str) -> Run | None:
        run = self.current
        if run is None or run.run_id != run_id or run.phase is RunPhase.FINISHED:
            return None
        return run

    def on_output(self, run_id: str, stream: str, data: str) -> None:
        run = self._live(run_id)
        if run is None or not data:
            return
        size = len(data) if data.isascii() else _utf8_size(data)  # isascii: O(1)
        run.output_bytes += size
        if run.truncated or self._dropping(run, size):
            return
        kind = stream if stream in TEXT_STREAMS else "stdout"
        room = run.output_limit - run.kept_bytes
        if size > room:
            self._truncate(run, kind, data, room)
            return
        run.kept_bytes += size
        run.line_open = not data.endswith("\n")
        self._append_text(run, kind, data, size)

    def _truncate(self, run: Run, kind: str, data: str, room: int) -> None:
        """Keep the head of ``data`` that fits the run's limit, drop the rest and every
        later chunk, and say so once on stderr."""
        head, _ = _split_utf8(data, room)
        if head:
            size = _utf8_size(head)
            run.kept_bytes += size
            run.line_open = not head.endswith("\n")
            self._append_text(run, kind, head, size)
        run.truncated = True
        newline = "\n" if run.line_open else ""
        self._append_text(
            run,
            "stderr",
            f"{newline}[bai] output truncated: this run wrote more than {format_size(run.output_limit)}; "
            "the rest was discarded\n",
        )

    def _dropping(self, run: Run, size: int) -> bool:
        if run.drop_beyond is not None and self.backlog_bytes + size > run.drop_beyond:
            run.dropped += size
            return True
        return False

    def discard_excess(self, limit: int) -> None:
        """The run was interrupted: from now on keep at most ``limit`` bytes undelivered
        and drop the rest (with a note), rather than stop reading the runner."""
        run = self.current
        if run is not None and run.phase is not RunPhase.FINISHED:
            run.drop_beyond = limit

    def over_backlog(self, limit: int) -> bool:
        """Whether the shell should stop reading the runner (backpressure). Never once the
        run drops what comes (interrupted, or truncated): reading it then costs nothing."""
        run = self.current
        if run is not None and (run.drop_beyond is not None or run.truncated):
            return False
        return self.backlog_bytes > limit

    def _append_text(self, run: Run, kind: str, data: str, size: int | None = None) -> None:
        if size is None:
            size = _utf8_size(data)
        last = run.pending[-1] if run.pending else None
        if last is not None and last.kind == kind:
            last.text += data
            last.size += size
        else:
            run.pending.append(_Chunk(kind=kind, text=data, size=size))
        run.pending_bytes[kind] += size
        self.backlog_bytes += size

    def on_media(self, run_id: str, mime: str, data: str) -> None:
        run = self._live(run_id)
        if run is None or self._dropping(run, len(data)):
            return
        if mime == "text/html":
            run.pending.append(_Chunk(kind="html", text=data, size=len(data)))
        else:
            run.pending.append(_Chunk(kind="media", media=[mime, data], size=len(data)))
        self.backlog_bytes += len(data)

    def on_step_finished(self, run_id: str, step: str, exit_code: int) -> None:
        """A batch step ended: the response that reaches this point ends there, with
        ``<step>-finished`` and the step's exit code."""
        run = self._live(run_id)
        if run is None or step not in STEP_STATUSES:
            return
        run.pending.append(_Chunk(kind="step", text=step, exit_code=exit_code))

    def on_waiting_input(self, run_id: str, password: bool) -> None:
        run = self._live(run_id)
        if run is None:
            return
        # the runner has already written the prompt to stdout
        run.phase = RunPhase.WAITING_INPUT
        run.is_password = password
        run.input_reported = False

    def on_finished(self, run_id: str, exit_code: int, engine_restarted: bool = False) -> bool:
        """Record the end of a run; False when it was not the live run (stale)."""
        run = self._live(run_id)
        if run is None:
            return False
        run.phase = RunPhase.FINISHED
        run.exit_code = exit_code
        run.engine_restarted = engine_restarted
        if run.dropped:
            self._append_text(run, "stderr", f"[bai] {run.dropped} bytes of output after the interrupt were dropped\n")
        return True

    def record_usage(self, run_id: str, usage: RunUsage | None, wall_ms: float, oom_kills: int = 0) -> None:
        """What the ended run ``run_id`` used (None: the sandbox cannot measure; its CPU
        and memory figures are then 0), and how many of its processes the OOM killer
        ended. Called by the shell right after the run ended."""
        run = self.current
        if run is None or run.run_id != run_id or run.phase is not RunPhase.FINISHED:
            return
        run.stats = RunStats(
            cpu_ms=round(usage.cpu_ms, 3) if usage is not None else 0.0,
            wall_ms=round(wall_ms, 3),
            mem_peak=usage.mem_peak if usage is not None else 0,
            mem_peak_scope=usage.mem_peak_scope if usage is not None else "run",
            output_bytes=run.output_bytes,
            output_truncated=run.truncated,
            oom_kills=oom_kills,
        )

    def on_exec_timeout(self) -> Run | None:
        """The run hit its time limit; the caller interrupts it. Returns the run, if one is live."""
        run = self.current
        if run is None or run.phase is RunPhase.FINISHED:
            return None
        run.timed_out = True
        return run

    def on_runner_gone(self, reason: str) -> str | None:
        """The sandbox died: end the live run with the reason on stderr. Returns the
        id of the run it ended, if one was live."""
        run = self.current
        if run is None or run.phase is RunPhase.FINISHED:
            return None
        self._append_text(run, "stderr", reason.rstrip("\n") + "\n")
        run.phase = RunPhase.FINISHED
        run.exit_code = run.exit_code if run.exit_code is not None else 137
        return run.run_id

    def add_notice(self, run_id: str, text: str) -> None:
        """An agent-made stderr line (OOM...), also after the run finished."""
        run = self.current
        if run is None or run.run_id != run_id:
            return
        self._append_text(run, "stderr", text.rstrip("\n") + "\n")

    # -- responses ---------------------------------------------------------

    @property
    def deliverable(self) -> bool:
        """Whether a waiting execute should answer now rather than at its flush timeout."""
        run = self.current
        if run is None:
            return True
        if run.phase is RunPhase.FINISHED:
            return True
        if run.phase is RunPhase.WAITING_INPUT and not run.input_reported:
            return True
        if any(chunk.kind == "step" for chunk in run.pending):
            return True
        return any(size >= self.stream_cap for size in run.pending_bytes.values())

    def take_response(self) -> RunResult:
        """Cut the next response for the current run. Raises InvalidRequest when there is none."""
        run = self.current
        if run is None:
            raise InvalidRequest("no run to report on", field="runId")
        console, complete = self._cut(run)
        if run.pending and run.pending[0].kind == "step":
            step = run.pending.popleft()
            return RunResult(run_id=run.run_id, status=STEP_STATUSES[step.text], exit_code=step.exit_code,
                             console=console)
        if complete and run.phase is RunPhase.FINISHED:
            status = RunStatus.EXEC_TIMEOUT if run.timed_out else RunStatus.FINISHED
            return RunResult(run_id=run.run_id, status=status, exit_code=run.exit_code, console=console,
                             options=RunOptions(stats=run.stats))
        if complete and run.phase is RunPhase.WAITING_INPUT:
            run.input_reported = True
            return RunResult(run_id=run.run_id, status=RunStatus.WAITING_INPUT, console=console,
                             options=RunOptions(is_password=run.is_password))
        return RunResult(run_id=run.run_id, status=RunStatus.CONTINUED, console=console)

    def _cut(self, run: Run) -> tuple[list[ConsoleEntry], bool]:
        """Take chunks in order until a stream's cap is reached; True when nothing is left."""
        budget = dict.fromkeys(TEXT_STREAMS, self.stream_cap)
        console: list[ConsoleEntry] = []
        while run.pending:
            chunk = run.pending[0]
            if chunk.kind == "step":  # the response ends at a step's end
                return console, False
            if chunk.kind in TEXT_STREAMS:
                room = budget[chunk.kind]
                if chunk.size > room:
                    head, rest = _split_utf8(chunk.text, room)
                    if head:
                        head_size = chunk.size - len(rest.encode("utf-8", "surrogatepass"))
                        self._consume(run, chunk.kind, head_size)
                        chunk.text, chunk.size = rest, chunk.size - head_size
                        _merge_into(console, chunk.kind, head)
                    return console, False
                budget[chunk.kind] -= chunk.size
                self._consume(run, chunk.kind, chunk.size)
                _merge_into(console, chunk.kind, chunk.text)
            else:
                self.backlog_bytes -= chunk.size
                console.append((chunk.kind, chunk.media if chunk.media is not None else chunk.text))
            run.pending.popleft()
        return console, True

    def _consume(self, run: Run, kind: str, size: int) -> None:
        run.pending_bytes[kind] -= size
        self.backlog_bytes -= size


def _merge_into(console: list[ConsoleEntry], kind: str, text: str) -> None:
    if console and console[-1][0] == kind and isinstance(console[-1][1], str):
        console[-1] = (kind, console[-1][1] + text)
    else:
        console.append((kind, text))


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def format_size(size: int) -> str:
    """``8 MiB``, ``512 KiB`` for whole units, else ``N bytes``."""
    for unit, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def _split_utf8(text: str, limit: int) -> tuple[str, str]:
    """Split ``text`` so the head is at most ``limit`` UTF-8 bytes, on a character boundary."""
    cut = text.encode("utf-8", "surrogatepass")[:limit]
    for trim in range(4):  # drop the bytes of a character cut in the middle
        try:
            head = cut[: len(cut) - trim].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            continue
        return head, text[len(head) :]
    return "", text
