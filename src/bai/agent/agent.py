"""The agent: runs sessions on this node for the manager.

The manager calls these methods through the agent RPC's handlers
(bai.agent.rpc_handlers): each is a call declared in bai.common.agent_calls, reached
in process (embedded mode) or over HTTP (bai.agent.rpc). A new method the manager calls
is a new declaration there, not a new route. The agent calls the manager back only
through ``on_session_gone`` (a sandbox died without being asked).

Errors (bai.common.errors): SessionNotFound for an unknown id; InvalidRequest
with ``field`` for a bad spec or run id; SessionCreationFailed /
SessionRestartFailed / ExecutionFailed when the work was tried and failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal, InvalidOperation

from bai.agent import downloads, files
from bai.agent.backends import Backend, create_backend
from bai.agent.backends.base import Sandbox
from bai.agent.backends.local.bwrap import invalid_env_names
from bai.agent.cgroups import Limits
from bai.agent.config import AgentConfig
from bai.agent.pool import WarmPool, startup_variables
from bai.agent.scratch import MAX_SCRATCH_BYTES, MIN_SCRATCH_BYTES
from bai.agent.session import GoneCallback, Session
from bai.common.agent_rpc import (
    AgentInfo,
    ByteStream,
    CompleteRequest,
    ExecRequest,
    FileDownload,
    FileListing,
    FileListRequest,
    FileUpload,
    SandboxSpec,
    SessionGone,
    SessionStats,
)
from bai.common.errors import (
    BaiError,
    InvalidRequest,
    NotImplementedFeature,
    SessionCreationFailed,
    SessionNotFound,
    SessionRestartFailed,
)
from bai.common.resources import format_slots
from bai.common.terminal import Terminal
from bai.common.wire import RunResult
from bai.runner.protocol import Shutdown

log = logging.getLogger(__name__)

VERSION = "0.1.0"
MIN_MEM = 16 * 2**20
MIN_PIDS = 8
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

SessionGoneHandler = Callable[[SessionGone], Awaitable[None]]


class Agent:
    """One node's sessions. ``start`` before use, ``stop`` to destroy everything."""

    def __init__(self, config: AgentConfig, backend: Backend | None = None) -> None:
        self.config = config
        self.backend = backend or create_backend(config)
        self.sessions: dict[str, Session] = {}
        self._creating: set[str] = set()
        self.on_session_gone: SessionGoneHandler | None = None
        self.rpc_url = config.advertised_url  # where the manager reaches this agent
        self.pool: WarmPool | None = None
        self.boot_id = secrets.token_hex(8)
        self._started = False

    async def start(self) -> None:
        await self.backend.start()
        self._started = True
        if self.config.keep_sessions and not self.backend.reattachable:
            log.warning("keep_sessions: the %s backend's sandboxes end with the agent; they are destroyed on stop",
                        self.backend.name)
        await self._recover()
        config = self.config
        if config.pool_size > 0:
            self.pool = WarmPool(
                self.backend,
                targets={env: config.pool_size for env in self.backend.pooled_environments()},
                limits=Limits(cpu=config.default_cpu, mem=config.default_mem, pids=config.default_pids),
                make_session=self._make_session,
                startup_timeout_s=config.startup_timeout_s,
                min_available_mem=config.pool_min_available_mem,
            )
            self.pool.start()

    async def _recover(self) -> None:
        """Take back the sessions a previous agent on this data dir left running (a
        backend whose sandboxes outlive it: docker). Each runner, connected again, says
        Ready; one that does not within the start timeout is destroyed."""
        recovered = await self.backend.recover()

        async def connect(spec: SandboxSpec, sandbox: Sandbox) -> None:
            session = self._make_session(spec, sandbox, self._session_gone)
            try:
                await session.connect(self.config.startup_timeout_s)
            except (SessionCreationFailed, OSError) as exc:
                log.warning("session %s: not re-attached: %s", spec.session_id, exc)
                session.closing = True
                session.detach()
                await sandbox.destroy(grace_s=0)
                return
            session.watch_oom()
            self.sessions[spec.session_id] = session
            log.info("session %s: re-attached", spec.session_id)

        await asyncio.gather(*(connect(spec, sandbox) for spec, sandbox in recovered))

    async def stop(self) -> None:
        """Destroy the pool and every session (or, with ``keep_sessions`` on a backend
        whose sandboxes outlive the agent, leave the sessions running for the next agent
        to re-attach), then release the backend. A destroy that fails does not stop the
        others; each failure is logged with its session and error, since what it could
        not release (a cgroup, a mount, a container) outlives the agent."""
        if self.pool is not None:
            await self.pool.stop()
            self.pool = None
        if self.config.keep_sessions and self.backend.reattachable:
            for session in list(self.sessions.values()):
                session.closing = True
                session.unwatch_oom()
                session.detach()
                self.backend.detach(session.sandbox)
            log.info("left %d session(s) running for the next agent", len(self.sessions))
            self.sessions.clear()
        ids = list(self.sessions)
        results = await asyncio.gather(*(self.destroy_session(i) for i in ids), return_exceptions=True)
        for session_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):  # what it failed to release may be left behind
                log.error("session %s: not destroyed at shutdown (its cgroup, mounts or container may be "
                          "left behind): %r", session_id, result, exc_info=result)
        if self._started:
            await self.backend.stop()
            self._started = False

    def info(self) -> AgentInfo:
        return AgentInfo(
            agent_id=self.config.agent_id,
            rpc_url=self.rpc_url,
            backend=self.backend.name,
            capacity=format_slots(self.schedulable_capacity()),
            environments=self.backend.environments(),
            unavailable=self.backend.unavailable_environments(),
            version=VERSION,
            sessions=sorted(self.sessions),
            pool=self.pool.counts() if self.pool is not None else {},
            scratch_type=self.backend.scratch_type(),
            boot_id=self.boot_id,
        )

    def schedulable_capacity(self) -> dict[str, Decimal]:
        """The hardware times the configured overcommit ratios, per slot."""
        ratios = {"cpu": self.config.cpu_overcommit, "mem": self.config.mem_overcommit}
        return {slot: amount * ratios.get(slot, Decimal(1)) for slot, amount in self.backend.capacity().items()}

    def _session(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise SessionNotFound(f"no session {session_id} on agent {self.config.agent_id}") from None

    # -- lifecycle -----------------------------------------------------------

    def limits_for(self, spec: SandboxSpec) -> Limits:
        """The session's limits: its resource request, else the agent's defaults."""
        config = self.config
        try:
            cpu = Decimal(spec.resources.get("cpu", config.default_cpu))
            mem = int(Decimal(spec.resources.get("mem", config.default_mem)))
            pids = int(spec.resources.get("pids", config.default_pids))
        except (InvalidOperation, ValueError) as exc:
            raise InvalidRequest(f"bad resources: {exc}", field="resources") from exc
        if not cpu.is_finite() or cpu < 0:
            raise InvalidRequest("resources.cpu must be a non-negative number", field="resources.cpu")
        if mem < MIN_MEM:
            raise InvalidRequest(f"resources.mem must be at least {MIN_MEM} bytes", field="resources.mem")
        if pids < MIN_PIDS:
            raise InvalidRequest(f"resources.pids must be at least {MIN_PIDS}", field="resources.pids")
        return Limits(cpu=cpu if cpu > 0 else config.default_cpu, mem=mem, pids=pids)

    def _validate(self, spec: SandboxSpec) -> Limits:
        if not SESSION_ID_RE.match(spec.session_id):  # it names a directory and a cgroup
            raise InvalidRequest("a session id is 1-128 letters, digits, '_', '.', '-'", field="session_id")
        if spec.session_id in self.sessions or spec.session_id in self._creating:
            raise InvalidRequest(f"session {spec.session_id} already exists here", field="session_id")
        problem = self.backend.environment_problem(spec.environment)
        if problem is not None:
            raise InvalidRequest(problem, field="environment")
        if spec.scratch_bytes is not None and not MIN_SCRATCH_BYTES <= spec.scratch_bytes <= MAX_SCRATCH_BYTES:
            raise InvalidRequest(
                f"scratch_bytes must be between {MIN_SCRATCH_BYTES} and {MAX_SCRATCH_BYTES}", field="scratch_bytes"
            )
        bad = invalid_env_names(spec.environ)
        if bad:
            raise InvalidRequest(f"invalid environment variable names: {', '.join(bad)}", field="environ")
        if spec.output_limit_bytes is not None and spec.output_limit_bytes < 0:
            raise InvalidRequest("output_limit_bytes must be 0 or more", field="output_limit_bytes")
        return self.limits_for(spec)

    async def create_session(self, spec: SandboxSpec) -> None:
        """Claim a pooled sandbox, else start one; returns when its runner is Ready
        and has the session's environment."""
        limits = self._validate(spec)
        self._creating.add(spec.session_id)
        try:
            session = await self._claim_pooled(spec, limits)
            if session is None:
                session = await self._start_cold(spec, limits)
            self.sessions[spec.session_id] = session
        finally:
            self._creating.discard(spec.session_id)

    def _make_session(self, spec: SandboxSpec, sandbox: Sandbox, on_gone: GoneCallback) -> Session:
        return Session(
            spec,
            sandbox,
            max_backlog=self.config.max_backlog_bytes,
            output_limit=self.config.output_limit,
            on_gone=on_gone,
        )

    async def _claim_pooled(self, spec: SandboxSpec, limits: Limits) -> Session | None:
        """A pooled session made into ``spec``'s, or None (no pool for its environment,
        none ready, variables only a fresh interpreter reads, a scratch disk of another
        size, or the claimed one could not take the session's limits)."""
        if self.pool is None or startup_variables(spec.environ) or not self.backend.poolable(spec):
            return None
        session = self.pool.claim(spec.environment)
        if session is None:
            return None
        session.adopt(spec, self._session_gone)
        try:
            if not session.runner_connected():
                raise SessionCreationFailed("the pooled sandbox died")
            await session.sandbox.claim(spec, limits)
            if spec.environ:
                await session.configure(spec.environ, self.config.startup_timeout_s)
        except BaseException as exc:
            session.closing = True
            session.detach()
            session.unwatch_oom()
            await session.sandbox.destroy(grace_s=0)
            if not isinstance(exc, SessionCreationFailed):
                raise
            log.info("session %s: the pooled sandbox is unusable (%s); starting cold", spec.session_id, exc)
            return None
        return session

    async def _start_cold(self, spec: SandboxSpec, limits: Limits) -> Session:
        sandbox = await self.backend.create(spec, limits)
        session = self._make_session(spec, sandbox, self._session_gone)
        try:
            await session.connect(self.config.startup_timeout_s)
        except BaseException:
            session.closing = True
            session.detach()
            await sandbox.destroy(grace_s=0)
            raise
        session.watch_oom()
        return session

    async def destroy_session(self, session_id: str) -> SessionStats:
        session = self._session(session_id)
        del self.sessions[session_id]  # a second destroy finds nothing to do
        session.closing = True
        if session.runner is not None and session.gone_reason is None:
            with contextlib.suppress(BaiError):
                session.runner.send(Shutdown())
        session.detach()
        session.unwatch_oom()
        return await session.sandbox.destroy(self.config.shutdown_grace_s)

    async def restart_session(self, session_id: str) -> None:
        """A fresh sandbox on the same scratch dir; the REPL state is lost."""
        session = self._session(session_id)
        async with session.restart_lock:
            session.detach()
            session.unwatch_oom()
            await session.sandbox.restart()
            session.reset_runs()
            try:
                await session.connect(self.config.startup_timeout_s)
            except SessionCreationFailed as exc:
                raise SessionRestartFailed(exc.message) from exc
            finally:
                session.watch_oom()

    async def _session_gone(self, session: Session, reason: str) -> None:
        log.warning("session %s: %s", session.session_id, reason)
        handler = self.on_session_gone
        if handler is None:
            return
        try:
            await handler(SessionGone(session_id=session.session_id, reason=reason))
        except Exception:
            log.exception("on_session_gone failed for session %s", session.session_id)

    # -- work ------------------------------------------------------------------

    async def execute(self, request: ExecRequest) -> RunResult:
        return await self._session(request.session_id).execute(request)

    async def interrupt(self, session_id: str) -> None:
        self._session(session_id).interrupt()

    async def complete(self, request: CompleteRequest) -> list[str]:
        return await self._session(request.session_id).complete(request)

    async def open_terminal(self, session_id: str, rows: int, cols: int) -> Terminal:
        """An interactive shell in the session's sandbox (bai.agent.terminals)."""
        return self._session(session_id).open_terminal(rows, cols)

    async def session_stats(self, session_id: str) -> SessionStats:
        return await self._session(session_id).sandbox.stats()

    # -- files (bai.agent.files: host-side, through fds, no link followed) ---------

    def _work_dir(self, session_id: str) -> files.WorkDir:
        work = self._session(session_id).sandbox.work_dir()
        if work is None:
            raise NotImplementedFeature(f"the {self.backend.name} backend has no file transfer")
        return work

    async def upload_file(self, request: FileUpload, chunks: AsyncIterator[bytes]) -> None:
        """Write one file into the session's /home/work (works while a run is busy)."""
        await files.upload(self._work_dir(request.session_id), request.path, chunks, request.max_bytes)

    async def download(self, request: FileDownload) -> ByteStream:
        return await downloads.download(self._work_dir(request.session_id), request.paths, request.max_bytes)

    async def list_files(self, request: FileListRequest) -> FileListing:
        return await files.list_files(self._work_dir(request.session_id), request.path, request.max_entries)
