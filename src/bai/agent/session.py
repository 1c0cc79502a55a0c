"""One session's async shell: the runner connection, the run core, timers.

``RunnerConnection`` is an asyncio protocol on the sandbox's runner socket: it splits
frames and hands each message to ``Session.dispatch``, synchronously, in the
loop's reader callback; so an execute is woken the moment its answer arrives,
with no queue, task switch, disk or cgroup access in between.

What the runner sends is not trusted: the sandbox may be compromised, or its runner
of another version (a docker container re-attached after an upgrade, decision 0010).
``protocol.decode`` checks each frame's type, field names and field types, and a
``Ready`` of another protocol version. A frame that fails is never dispatched: the
agent cuts the connection (``Session.refuse``) and the session ends with the reason,
as when its sandbox dies: a start or restart waiting for ``Ready`` fails with it
(SessionCreationFailed), a live session is reported gone with it and its current run
ends with it on stderr. The frames before the bad one are dispatched: they were valid.
A valid message that makes no sense now (a ``Finished`` of another run, a message
meant for the runner) is dropped, logged when it is of a kind the agent never takes.

``Session`` owns a ``RunBook`` (bai.agent.runs) and does the I/O it decides:
sends frames, arms the flush and exec timers, pauses the socket while too much
output is undelivered (backpressure), and tells the agent when the sandbox dies
on its own.

Per-run accounting: just before Execute is sent the sandbox notes its CPU counter
and resets its memory peak (``Sandbox.begin_run``), and the moment the run ends
(its Finished frame, a forced end, the sandbox's death) it reads them again
(``end_run``); wall time is the monotonic clock between the two. Both are a few
``pread``/``pwrite`` calls on kept descriptors, in the same loop callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bai.agent.backends.base import Sandbox
from bai.agent.runs import RunBook
from bai.agent.terminals import SessionTerminal, check_size
from bai.common.agent_rpc import BatchSteps, CompleteRequest, ExecRequest, SandboxSpec
from bai.common.errors import ExecutionFailed, SessionCreationFailed
from bai.common.wire import RunResult
from bai.runner import protocol as p

log = logging.getLogger(__name__)

EXEC_TIMEOUT_GRACE_S = 5.0  # after interrupting a timed-out run, wait this long for Finished
COMPLETE_TIMEOUT_S = 5.0


class RunnerConnection(asyncio.Protocol):
    """The agent's end of one runner's socket (the runner's end is
    bai.runner.agent_connection.AgentConnection): frames to and from it, one per
    sandbox start, made by ``Session.connect``."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.frames = p.FrameBuffer()
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.closing = False  # the agent closes it: no "gone" report

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        messages, error = self.frames.feed(data)
        for message in messages:
            self.session.dispatch(self, message)
        if error is not None:
            self.session.refuse(self, error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.runner_lost(self)

    def send(self, message: p.Message) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ExecutionFailed("the session's runner is not connected")
        self.transport.write(p.encode(message))

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now, unsent frames included; ``connection_lost`` follows."""
        if self.transport is not None:
            self.transport.abort()


GoneCallback = Callable[["Session", str], Awaitable[None]]


class Session:
    """A live session on this agent. Created and driven by Agent only."""

    def __init__(
        self, spec: SandboxSpec, sandbox: Sandbox, *, max_backlog: int, output_limit: int, on_gone: GoneCallback
    ) -> None:
        self.spec = spec
        self.session_id = spec.session_id
        self.sandbox = sandbox
        self.runs = RunBook(output_limit=output_limit)  # the agent's default, unless the spec has one
        self.max_backlog = max_backlog
        self.on_gone = on_gone
        self.runner: RunnerConnection | None = None
        self.gone_reason: str | None = None
        self.refused: str | None = None  # why the current runner was cut off (``refuse``)
        self.closing = False
        self.oom_kills = 0  # as last read from the cgroup (on OOM events and abnormal ends only)
        self.oom_events = 0  # OOM notifications seen
        self._oom_baseline = (0, 0)  # (oom_kills, oom_events) when the current run started
        self._ready: asyncio.Future[p.Ready] | None = None
        self._configured: asyncio.Future[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._completion: asyncio.Future[list[str]] | None = None
        self._exec_timer: asyncio.TimerHandle | None = None
        self._run_started = 0.0  # time.monotonic() when the current run's Execute was sent
        self._metering = False  # the sandbox's begin_run worked for the current run
        self._lock = asyncio.Lock()
        self.restart_lock = asyncio.Lock()
        self._complete_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: dict[type[p.Message], Callable[[Any], None]] = {
            p.Ready: self._on_ready,
            p.Output: self._on_output,
            p.Media: self._on_media,
            p.WaitingInput: self._on_waiting_input,
            p.Finished: self._on_finished,
            p.StepFinished: self._on_step_finished,
            p.Completions: self._on_completions,
            p.Configured: self._on_configured,
            p.Failure: self._on_failure,
            p.PtyOutput: self._on_pty_output,
            p.PtyClosed: self._on_pty_closed,
        }
        self.terminals: dict[str, SessionTerminal] = {}

    # -- start ---------------------------------------------------------------

    async def connect(self, timeout_s: float) -> p.Ready:
        """Attach to the sandbox's runner socket and wait for Ready.
        Raises SessionCreationFailed with the sandbox's diagnostics."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self.gone_reason = None
        self.refused = None
        _, connection = await loop.create_unix_connection(
            lambda: RunnerConnection(self), sock=self.sandbox.runner_socket
        )
        self.runner = connection
        try:
            async with asyncio.timeout(timeout_s):
                ready = await self._ready
        except TimeoutError:
            raise SessionCreationFailed(
                f"the runner did not start within {timeout_s:g} s" + self._diagnostics_suffix()
            ) from None
        except ConnectionError:
            if self.refused is not None:
                raise SessionCreationFailed(self.refused) from None
            await _settle(self.sandbox)
            raise SessionCreationFailed(
                "the sandbox exited before its runner was ready" + self._diagnostics_suffix()
            ) from None
        self.sandbox.runner_started()
        return ready

    def adopt(self, spec: SandboxSpec, on_gone: GoneCallback) -> None:
        """A pooled session (bai.agent.pool) becomes the session ``spec``: from now on it
        reports under that id to ``on_gone``. Called by WarmPool.claim only."""
        self.spec = spec
        self.session_id = spec.session_id
        self.on_gone = on_gone

    def runner_connected(self) -> bool:
        """The runner's socket is open and no death was reported (a pooled session
        may have died while its report is still on the way)."""
        transport = self.runner.transport if self.runner is not None else None
        return self.gone_reason is None and transport is not None and not transport.is_closing()

    async def configure(self, environ: dict[str, str], timeout_s: float) -> None:
        """Set environment variables in the runner and its REPL before the first run
        (a claimed pooled sandbox). Raises SessionCreationFailed."""
        if self.runner is None or self.gone_reason is not None:
            raise SessionCreationFailed("the pooled sandbox is gone")
        self._configured = asyncio.get_running_loop().create_future()
        try:
            self.runner.send(p.Configure(environ=dict(environ)))
            async with asyncio.timeout(timeout_s):
                await self._configured
        except (TimeoutError, ExecutionFailed, ConnectionError) as exc:
            raise SessionCreationFailed(f"cannot configure the pooled sandbox: {exc!r}") from None
        finally:
            self._configured = None

    def _diagnostics_suffix(self) -> str:
        text = self.sandbox.diagnostics()
        return f": {text}" if text else ""

    def watch_oom(self) -> None:
        fd = self.sandbox.oom_watch_fd()
        if fd is not None:
            asyncio.get_running_loop().add_reader(fd, self._on_oom_event)

    def unwatch_oom(self) -> None:
        fd = self.sandbox.oom_watch_fd()
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)

    # -- runner messages -----------------------------------------------------

    def dispatch(self, connection: RunnerConnection, message: p.Message) -> None:
        if connection is not self.runner:
            return  # a replaced sandbox's last words
        handler = self._handlers.get(type(message))
        if handler is None:
            log.warning("session %s: unexpected %s from the runner", self.session_id, p.describe(message))
            return
        handler(message)
        self._after_event()

    def refuse(self, connection: RunnerConnection, error: p.ProtocolError) -> None:
        """The runner sent a frame that is not a message of this protocol: cut it off
        (see the module docstring). Called by RunnerConnection only."""
        if connection is not self.runner or self.refused is not None:
            return
        if isinstance(error, p.VersionMismatch):
            self.refused = str(error)
        else:
            self.refused = f"the runner broke the protocol: {error}"
        log.warning("session %s: %s; the runner is cut off", self.session_id, self.refused)
        connection.abort()

    def _on_ready(self, message: p.Ready) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(message)

    def _on_configured(self, message: p.Configured) -> None:
        if self._configured is not None and not self._configured.done():
            self._configured.set_result(None)

    def _on_output(self, message: p.Output) -> None:
        self.runs.on_output(message.run_id, message.stream, message.data)

    def _on_media(self, message: p.Media) -> None:
        self.runs.on_media(message.run_id, message.mime, message.data)

    def _on_waiting_input(self, message: p.WaitingInput) -> None:
        self.runs.on_waiting_input(message.run_id, message.password)

    def _on_step_finished(self, message: p.StepFinished) -> None:
        self.runs.on_step_finished(message.run_id, message.step, message.exit_code)

    def _on_finished(self, message: p.Finished) -> None:
        if not self.runs.on_finished(message.run_id, message.exit_code, message.engine_restarted):
            return
        self._cancel_exec_timer()
        ended_at = time.monotonic()
        # The notification may still wait in the loop behind this frame: poll it (an
        # eventfd read, no cgroup file). The kill counter is read on the rare paths only.
        if self.sandbox.drain_oom_watch():
            self.oom_events += 1
        abnormal = message.engine_restarted or message.exit_code < 0 or message.exit_code >= 128
        if abnormal or self.oom_events > self._oom_baseline[1]:
            self._refresh_oom_kills()
        killed = self.oom_kills - self._oom_baseline[0]
        if killed > 0:
            self.runs.add_notice(message.run_id, self._oom_notice())
        self._run_ended(message.run_id, ended_at, max(0, killed))

    def _on_completions(self, message: p.Completions) -> None:
        if self._completion is not None and not self._completion.done():
            self._completion.set_result(list(message.items))

    def _on_failure(self, message: p.Failure) -> None:
        log.warning("session %s: the runner reports: %s", self.session_id, message.message)
        run = self.runs.current
        if message.run_id is not None and run is not None and run.run_id == message.run_id:
            self.runs.add_notice(message.run_id, f"runner failure: {message.message}")
            if self.runs.on_finished(message.run_id, exit_code=1):
                self._cancel_exec_timer()
                self._run_ended(message.run_id, time.monotonic())
        if self._completion is not None and not self._completion.done():
            self._completion.set_result([])

    def _on_pty_output(self, message: p.PtyOutput) -> None:
        terminal = self.terminals.get(message.pty_id)
        if terminal is not None:
            terminal.on_output(message)

    def _on_pty_closed(self, message: p.PtyClosed) -> None:
        terminal = self.terminals.get(message.pty_id)
        if terminal is not None:
            terminal.on_closed(message.exit_code, message.message)

    def _after_event(self) -> None:
        if self._wake is not None and not self._wake.done() and self.runs.deliverable:
            self._wake.set_result(None)
        if self.runner is not None and self.runs.over_backlog(self.max_backlog):
            self.runner.pause()

    # -- OOM -------------------------------------------------------------------

    def _on_oom_event(self) -> None:
        if self.sandbox.drain_oom_watch():
            self.oom_events += 1
            self._refresh_oom_kills()  # may lag: the kernel notifies before it kills

    def _refresh_oom_kills(self) -> None:
        try:
            self.oom_kills = max(self.oom_kills, self.sandbox.oom_kills())
        except OSError as exc:
            log.debug("session %s: cannot read OOM kills: %s", self.session_id, exc)

    def _oom_notice(self) -> str:
        mib = self.sandbox.limits.mem // 2**20
        return (
            f"[bai] Out of memory: a process of this run was killed for exceeding "
            f"the session's memory limit of {mib} MiB."
        )

    # -- requests --------------------------------------------------------------

    async def execute(self, request: ExecRequest) -> RunResult:
        """Start / continue / feed a run and answer within ``request.flush_timeout_s``."""
        async with self._lock:
            self._check_alive(request.mode)
            connection = self.runner
            assert connection is not None
            if request.mode in ("query", "batch"):
                self._start_run(connection, request)
            elif request.mode == "continue":
                self.runs.check_continue(request.run_id)
            else:
                run = self.runs.check_input(request.run_id)
                connection.send(p.Input(run_id=run.run_id, text=request.code))
            if not self.runs.deliverable:
                await self._wait(request.flush_timeout_s)
            result = self.runs.take_response()
            if connection.paused and self.runs.backlog_bytes <= self.max_backlog // 2:
                connection.resume()
        return result

    def _start_run(self, connection: RunnerConnection, request: ExecRequest) -> None:
        """A query or a batch run: the runner is sent the commands the sandbox renders."""
        if request.mode == "batch":
            message = self.sandbox.batch_message("", request.batch or BatchSteps())
        else:
            message = self.sandbox.query_message("", request.code)
            message.script = request.script
        run = self.runs.start(request.run_id, self.spec.output_limit_bytes)
        message.run_id = run.run_id
        self._oom_baseline = (self.oom_kills, self.oom_events)
        self._run_begins()
        connection.send(message)
        self._arm_exec_timer(run.run_id)

    def _run_begins(self) -> None:
        try:
            self.sandbox.begin_run()
            self._metering = True
        except OSError as exc:
            self._metering = False
            log.debug("session %s: no accounting for this run: %s", self.session_id, exc)
        self._run_started = time.monotonic()

    def _run_ended(self, run_id: str, ended_at: float, oom_kills: int = 0) -> None:
        """Measure the run that has just ended and hand the figures to the RunBook."""
        usage = None
        if self._metering:
            try:
                usage = self.sandbox.end_run()
            except OSError as exc:
                log.debug("session %s: cannot measure run %s: %s", self.session_id, run_id, exc)
        self.runs.record_usage(run_id, usage, (ended_at - self._run_started) * 1000, oom_kills)

    async def _wait(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake = loop.create_future()
        timer = loop.call_later(max(0.0, timeout_s), _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    def _check_alive(self, mode: str) -> None:
        """A dead sandbox still answers ``continue`` (its last run carries the reason)."""
        if self.closing:
            raise ExecutionFailed("the session is being destroyed")
        if self.gone_reason is not None and mode != "continue":
            raise ExecutionFailed(f"the session's sandbox is gone: {self.gone_reason}")
        if self.runner is None:
            raise ExecutionFailed("the session's runner is not connected")

    def interrupt(self) -> None:
        """SIGINT to the user's code (through the runner). A paused socket is resumed,
        with excess output dropped: a runner blocked on sending must hear this."""
        if self.runner is not None and self.gone_reason is None:
            with contextlib.suppress(ExecutionFailed):
                self.runner.send(p.Interrupt())
            self.runs.discard_excess(self.max_backlog)
            self.runner.resume()

    async def complete(self, request: CompleteRequest) -> list[str]:
        async with self._complete_lock:
            self._check_alive("complete")
            assert self.runner is not None
            loop = asyncio.get_running_loop()
            self._completion = loop.create_future()
            self.runner.send(p.Complete(code=request.code, line=request.line, row=request.row, col=request.col))
            try:
                async with asyncio.timeout(COMPLETE_TIMEOUT_S):
                    return await self._completion
            except TimeoutError:
                return []
            finally:
                self._completion = None

    # -- terminals ---------------------------------------------------------------

    def open_terminal(self, rows: int, cols: int) -> SessionTerminal:
        """A shell on a new pty in the sandbox (bai.runner.terminal); its output
        follows through ``read``. Raises ExecutionFailed when the runner is gone."""
        check_size(rows, cols)
        self._check_alive("terminal")
        assert self.runner is not None
        terminal = SessionTerminal(uuid.uuid4().hex[:12], self.runner.send, self._forget_terminal)
        self.terminals[terminal.pty_id] = terminal
        try:
            self.runner.send(p.PtyOpen(pty_id=terminal.pty_id, rows=rows, cols=cols))
        except ExecutionFailed:
            self.terminals.pop(terminal.pty_id, None)
            raise
        return terminal

    def _forget_terminal(self, pty_id: str) -> None:
        self.terminals.pop(pty_id, None)

    def _end_terminals(self, reason: str) -> None:
        for terminal in list(self.terminals.values()):
            terminal.on_closed(-1, reason)

    # -- exec timeout ------------------------------------------------------------

    def _arm_exec_timer(self, run_id: str) -> None:
        self._cancel_exec_timer()
        if self.spec.exec_timeout_s:
            loop = asyncio.get_running_loop()
            self._exec_timer = loop.call_later(self.spec.exec_timeout_s, self._on_exec_timeout, run_id)

    def _cancel_exec_timer(self) -> None:
        if self._exec_timer is not None:
            self._exec_timer.cancel()
            self._exec_timer = None

    def _on_exec_timeout(self, run_id: str) -> None:
        run = self.runs.on_exec_timeout()
        if run is None or run.run_id != run_id:
            return
        self.interrupt()
        loop = asyncio.get_running_loop()
        self._exec_timer = loop.call_later(EXEC_TIMEOUT_GRACE_S, self._force_finish, run_id)

    def _force_finish(self, run_id: str) -> None:
        """The runner did not end a timed-out run even after its own escalation."""
        self._exec_timer = None
        if self.runs.on_finished(run_id, exit_code=137):
            log.warning("session %s: run %s ignored its interrupt", self.session_id, run_id)
            self._run_ended(run_id, time.monotonic())
            self._after_event()

    # -- the end -------------------------------------------------------------------

    def runner_lost(self, connection: RunnerConnection) -> None:
        if connection is not self.runner:
            return
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ConnectionError("runner socket closed"))
        if self._configured is not None and not self._configured.done():
            self._configured.set_exception(ConnectionError("runner socket closed"))
        self._end_terminals("the session's sandbox is gone")
        if connection.closing or self.closing:
            return
        task = asyncio.get_running_loop().create_task(self._report_gone(time.monotonic()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report_gone(self, lost_at: float) -> None:
        status = await _settle(self.sandbox)
        self._refresh_oom_kills()
        reason = self.refused if self.refused is not None else self._death_reason(status)
        self.gone_reason = reason
        self._cancel_exec_timer()
        ended = self.runs.on_runner_gone(f"[bai] {reason}")
        if ended is not None:
            self._run_ended(ended, lost_at)
        self._after_event()
        if self._completion is not None and not self._completion.done():
            self._completion.set_result([])
        await self.on_gone(self, reason)

    def _death_reason(self, status: int | None) -> str:
        """Why the runner's socket closed on its own: the OOM killer, or the sandbox's
        exit status (None: still running), with the last line of its diagnostics."""
        if self.oom_kills > self._oom_baseline[0]:
            mib = self.sandbox.limits.mem // 2**20
            reason = f"the sandbox was killed for exceeding its memory limit of {mib} MiB"
        elif status is None:
            reason = "the runner closed its socket"
        else:
            reason = f"the sandbox exited with status {status}"
        diagnostics = self.sandbox.diagnostics()
        if diagnostics:
            reason += f" ({diagnostics.splitlines()[-1][:200]})"
        return reason

    def detach(self) -> None:
        """Stop listening to the current runner (before a restart or destroy)."""
        self._cancel_exec_timer()
        self._end_terminals("the session is restarting or ending")
        if self.runner is not None:
            self.runner.close()
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def reset_runs(self) -> None:
        self.runs = RunBook(self.runs.stream_cap, self.runs.output_limit)


async def _settle(sandbox: Sandbox, timeout_s: float = 1.0) -> int | None:
    """The sandbox's exit status, waiting briefly; None if it is still running."""
    try:
        async with asyncio.timeout(timeout_s):
            return await sandbox.wait_exit()
    except TimeoutError:
        return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
