"""The session registry: the thin async shell around the sessions' state machine
(bai.manager.session_state), and the relay of executions to agents.

``SessionStates`` decides every transition; this class turns requests and what agents
report into its events, performs the actions it returns (store writes, published
events, agent calls, the idle and lifetime timers) and feeds each agent call's outcome
back as an event. Live sessions are held in memory (the hot path reads no rows); every
persisted status is written through to the ``sessions`` table. The registry is driven by
the API edge and by the agent registry (heartbeats, lost agents, sandboxes that died);
it never touches HTTP.

Per session it holds a lock (start, destroy and restart run one at a time, each across
its agent call), a write lock (one store write at a time, each with the state at its
start, so create's insert and a placement's update neither race nor land stale) and the
event a create request waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from bai.common.agent_rpc import (
    CompleteRequest,
    ExecRequest,
    SessionGone,
    SessionStats,
)
from bai.common.errors import BaiError, SessionNotFound, SessionRestartFailed
from bai.common.limits import SessionLimits
from bai.common.resources import Slots, format_bytes, format_slots
from bai.common.status import SessionStatus
from bai.common.wire import RunResult
from bai.manager import lifecycle
from bai.manager.agent_client import AgentClient
from bai.manager.agents import AgentRegistry
from bai.manager.clock import Clock
from bai.manager.config import ManagerConfig
from bai.manager.events import EventBus, SessionEvent
from bai.manager.keypairs import Keypair
from bai.manager.policies import ResourcePolicy
from bai.manager.reaper import Reaper
from bai.manager.session_state import (
    Action,
    Admitted,
    AgentJoined,
    AgentLost,
    AgentReported,
    CheckSandbox,
    CreateAbandoned,
    CreateFailed,
    CreateParams,
    CreateRequested,
    CreateSandbox,
    DestroyRequested,
    DestroySandbox,
    Event,
    Forget,
    LiveSession,
    Persist,
    Publish,
    Recovered,
    RecoveryWindowClosed,
    RenameRequested,
    RestartFailed,
    RestartRequested,
    RestartSandbox,
    SandboxDestroyed,
    SandboxDied,
    SandboxMissing,
    SandboxReady,
    SandboxRestarted,
    SessionStates,
    Settle,
    StartBegun,
    StartSandbox,
    StopBegun,
    Watch,
)
from bai.manager.store.db import Database
from bai.manager.store.tables import SessionRow
from bai.manager.usage import stats_payload

__all__ = ["CreateParams", "LiveSession", "SessionRegistry"]

log = logging.getLogger(__name__)


def _session_values(session: LiveSession) -> dict[str, Any]:
    """The session's row, as the column values of one upsert."""
    return dict(
        id=session.id,
        name=session.name,
        access_key=session.access_key,
        image=session.image,
        type=session.type,
        tag=session.tag,
        status=session.status.value,
        status_info=session.status_info,
        agent_id=session.agent_id,
        requested_slots=format_slots(session.requested),
        occupied_slots=format_slots(session.requested) if session.agent_id else {},
        environ=session.environ,
        num_queries=session.num_queries,
        last_stat=session.last_stat,
        limits=session.limits.to_json(),
        created_at=session.created_at,
        terminated_at=session.terminated_at,
    )


def _row_to_session(row: SessionRow) -> LiveSession:
    def aware(value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    created = aware(row.created_at)
    assert created is not None
    return LiveSession(
        id=row.id,
        name=row.name,
        access_key=row.access_key,
        image=row.image,
        type=row.type,
        tag=row.tag,
        requested={k: Decimal(v) for k, v in row.requested_slots.items()},
        environ=dict(row.environ),
        created_at=created,
        status=SessionStatus(row.status),
        status_info=row.status_info,
        agent_id=row.agent_id,
        terminated_at=aware(row.terminated_at),
        num_queries=row.num_queries,
        last_stat=row.last_stat,
        limits=SessionLimits.from_json(row.limits) if row.limits else SessionLimits(policy="default"),
    )


@dataclass
class _Held:
    """What the shell holds for one live session (dropped at ``Forget``)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settled: asyncio.Event = field(default_factory=asyncio.Event)


class SessionRegistry:
    def __init__(
        self, config: ManagerConfig, db: Database, agents: AgentRegistry, events: EventBus, clock: Clock | None = None
    ) -> None:
        """``clock``: the manager's (bai.manager.clock), read for the sessions' stamps, idle
        time and lifetime."""
        self._config = config
        self._clock = clock or Clock()
        self._db = db
        self._agents = agents
        self._events = events
        #: the state machine; read its queries, change it only through ``_feed``
        self.state = SessionStates(agents, config.default_resources, config.exec_timeout_s, self._utc_now)
        self._held: dict[str, _Held] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper = Reaper(self._on_expired, self._clock)
        self._recovered_at = time.monotonic()
        self._performers: dict[type[Any], Callable[[Any], Awaitable[list[Action]]]] = {
            Admitted: self._nothing,
            Publish: self._publish,
            Persist: self._persist,
            Settle: self._settle,
            Watch: self._watch,
            Forget: self._forget,
            StartSandbox: self._start_sandbox,
            CreateSandbox: self._create_sandbox,
            DestroySandbox: self._destroy_sandbox,
            RestartSandbox: self._restart_sandbox,
            CheckSandbox: self._check_sandbox,
        }

    def _utc_now(self) -> datetime:
        """The state machine's clock: the manager's, read at each call (a test may replace it)."""
        return self._clock.utc()

    # -- the state machine's events and actions ---------------------------------------------

    async def _feed(self, event: Event) -> list[Action]:
        """Hand ``event`` to the state machine and perform what it decides; returns the actions."""
        actions = self.state.handle(event)
        await self._perform(actions)
        return actions

    async def _perform(self, actions: list[Action]) -> None:
        """Each action in order; an agent call's outcome is fed back and its actions follow."""
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            queue.extend(await self._performers[type(action)](action))

    def _feed_later(self, event: Event) -> None:
        """For the synchronous callers (a heartbeat): decide now, perform in a task."""
        actions = self.state.handle(event)
        if actions:
            self._spawn(self._perform(actions))

    def _held_for(self, session: LiveSession | str) -> _Held:
        """What is held for a session; a session that is not live gets a fresh, unkept one."""
        session_id = session if isinstance(session, str) else session.id
        held = self._held.get(session_id)
        if held is None:
            held = _Held()
            if self.state.find_by_id(session_id) is not None:
                self._held[session_id] = held
        return held

    async def _nothing(self, action: Admitted) -> list[Action]:
        return []

    async def _publish(self, action: Publish) -> list[Action]:
        self._events.publish(action.event)
        return []

    async def _persist(self, action: Persist) -> list[Action]:
        async with self._held_for(action.session).write_lock:
            await self._db.upsert(SessionRow, _session_values(action.session))
        return []

    async def _settle(self, action: Settle) -> list[Action]:
        self._held_for(action.session_id).settled.set()
        return []

    async def _watch(self, action: Watch) -> list[Action]:
        session = self.state.find_by_id(action.session_id)
        if session is not None:
            now = self._clock.monotonic()
            session.activity.touch(now)  # idle time and lifetime count from the start
            started = now - action.started_ago_s
            self._reaper.watch(session.id, session.activity, session.limits, started=started)
        return []

    async def _forget(self, action: Forget) -> list[Action]:
        self._reaper.forget(action.session_id)
        self._held.pop(action.session_id, None)
        return []

    async def _start_sandbox(self, action: StartSandbox) -> list[Action]:
        self._spawn(self._start(action.session_id))
        return []

    async def _start(self, session_id: str) -> None:
        async with self._held_for(session_id).lock:
            await self._feed(StartBegun(session_id))

    async def _create_sandbox(self, action: CreateSandbox) -> list[Action]:
        try:
            await self._agents.client(action.agent_id).create_session(action.spec)
        except BaiError as exc:
            log.warning("session %s failed to start: %s", action.spec.session_name, exc)
            return self.state.handle(CreateFailed(action.session_id, exc.message))
        return self.state.handle(SandboxReady(action.session_id))

    async def _destroy_sandbox(self, action: DestroySandbox) -> list[Action]:
        try:
            stats = await self._agents.client(action.agent_id).destroy_session(action.session_id)
        except BaiError as exc:
            log.warning("session %s: destroy on its agent failed: %s", action.session_id, exc)
            stats = SessionStats()
        return self.state.handle(SandboxDestroyed(action.session_id, action.reason, stats))

    async def _restart_sandbox(self, action: RestartSandbox) -> list[Action]:
        session = self.state.find_by_id(action.session_id)
        name = session.name if session is not None else action.session_id
        try:
            await self._agents.client(action.agent_id).restart_session(action.session_id)
        except BaiError as exc:
            await self._perform(self.state.handle(RestartFailed(action.session_id, exc.message)))
            raise SessionRestartFailed(f"session {name} could not restart: {exc.message}") from exc
        return self.state.handle(SandboxRestarted(action.session_id))

    async def _check_sandbox(self, action: CheckSandbox) -> list[Action]:
        """Whether a restarted agent still has the session (it may have been created there
        after the heartbeat's list was made)."""
        try:
            await self._agents.client(action.agent_id).session_stats(action.session_id)
        except SessionNotFound:
            return self.state.handle(SandboxMissing(action.session_id))
        except BaiError as exc:
            log.warning("session %s: cannot check it on its restarted agent: %s", action.session_id, exc)
        return []

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- start and stop ----------------------------------------------------

    async def recover(self) -> None:
        """Take back the sessions an earlier run of the manager left live (the state
        machine's ``Recovered``). A RUNNING one stays live until its agent's first
        heartbeat confirms or ends it (``agent_reported``); an agent that does not come
        back within ``agent_lost_after_s`` loses it (``expire_unconfirmed``)."""
        async with self._db.sessionmaker() as s:
            rows = (await s.scalars(select(SessionRow).where(SessionRow.status.not_in(lifecycle.TERMINAL)))).all()
        await self._feed(Recovered(tuple(_row_to_session(row) for row in rows)))
        self._recovered_at = time.monotonic()

    async def begin_stop(self) -> None:
        """The stop's first step (``StopBegun``), before the HTTP server drains its
        requests: no session is created or placed any more, those waiting for a place are
        cancelled, and every ``wait_settled`` returns, so no request waits on a session
        that only the rest of the stop would end. Idempotent."""
        if self.state.stopping:
            return
        self._reaper.close()
        await self._feed(StopBegun())

    async def shutdown(self, keep_sessions: bool = False) -> None:
        """Destroy every live session, all at once (embedded mode stops its agent next);
        with ``keep_sessions``, leave the placed ones to their agents and the next start's
        ``recover``. Starts in flight are cancelled (the agent removes what it had made)
        and their sessions destroyed as the others. Begins the stop if
        ``begin_stop`` has not."""
        await self.begin_stop()
        for task in list(self._tasks):
            task.cancel()
        if keep_sessions:
            return
        await asyncio.gather(*(self._destroy_at_stop(session) for session in self.state.live()))

    async def _destroy_at_stop(self, session: LiveSession) -> None:
        try:
            await self.destroy(session, reason="server-shutdown")
        except SessionNotFound:
            pass  # it ended meanwhile
        except BaiError as exc:
            log.warning("session %s: %s", session.name, exc)

    # -- lookups -------------------------------------------------------------

    def live_sessions(self, access_key: str | None = None) -> list[LiveSession]:
        return self.state.live(access_key)

    def find_live(self, access_key: str, id_or_name: str) -> LiveSession:
        """A live session of ``access_key`` by id or name; SessionNotFound otherwise."""
        return self.state.find_live(access_key, id_or_name)

    async def find(self, access_key: str, id_or_name: str) -> LiveSession:
        """Like find_live, but also finds ended sessions in the store."""
        try:
            return self.state.find_live(access_key, id_or_name)
        except SessionNotFound:
            pass
        async with self._db.sessionmaker() as s:
            rows = (
                await s.scalars(
                    select(SessionRow)
                    .where(SessionRow.access_key == access_key)
                    .where((SessionRow.id == id_or_name) | (SessionRow.name == id_or_name))
                    .order_by(SessionRow.created_at.desc())
                    .limit(2)
                )
            ).all()
        exact = [row for row in rows if row.id == id_or_name]
        if exact:
            return _row_to_session(exact[0])
        if not rows:
            raise SessionNotFound(f"no such session: {id_or_name}")
        return _row_to_session(rows[0])

    async def match(self, access_key: str, prefix: str) -> list[LiveSession]:
        return self.state.match(access_key, prefix)

    def occupied(self) -> dict[str, Slots]:
        """Per agent, the slots its live sessions requested."""
        return self.state.occupied()

    # -- requests ----------------------------------------------------------------

    async def create(self, keypair: Keypair, params: CreateParams, policy: ResourcePolicy) -> tuple[LiveSession, bool]:
        """Create (or reuse) a session within the keypair's resource ``policy``; returns it and
        whether it is new. Does not wait for it to start."""
        event = CreateRequested(str(uuid.uuid4()), keypair.access_key, keypair.concurrency_limit, params, policy)
        actions = await self._feed(event)
        admitted = actions[0]
        assert isinstance(admitted, Admitted)
        return admitted.session, admitted.created

    async def wait_settled(self, session: LiveSession, timeout_s: float | None) -> bool:
        """Wait until the session runs or ended, or the manager stops; False when the
        timeout passed first."""
        if session.status in lifecycle.SETTLED or not self.state.is_live(session) or self.state.stopping:
            return True
        try:
            await asyncio.wait_for(self._held_for(session).settled.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def abandon(self, session: LiveSession) -> None:
        """The client that asked for the session went away while it waited for it to
        start (``CreateAbandoned``): cancelled if it still waits for a place."""
        await self._feed(CreateAbandoned(session.id))

    async def destroy(self, session: LiveSession, reason: str = "user-requested") -> None:
        """End the session (cancel it while it waits for a place); its usage lands in
        ``last_stat``. SessionNotFound when it has ended."""
        async with self._held_for(session).lock:
            await self._feed(DestroyRequested(session, reason))

    async def restart(self, session: LiveSession) -> None:
        """A fresh sandbox on the same scratch dir; SessionRestartFailed (and the session
        ends in ERROR) when the agent cannot."""
        async with self._held_for(session).lock:
            actions = self.state.handle(RestartRequested(session))
            session.activity.run_ended(self._clock.monotonic())
            await self._perform(actions)

    async def rename(self, session: LiveSession, new_name: str) -> None:
        await self._feed(RenameRequested(session, new_name))

    # -- idle timeout and lifetime ---------------------------------------------------

    def reap(self) -> list[str]:
        """Look at every session's idle time and lifetime now (``Reaper.sweep``): for a
        clock moved by hand, whose timers were armed on the old time. Returns the ids of
        those found past a limit, which are being ended."""
        return self._reaper.sweep()

    def _on_expired(self, session_id: str, reason: str) -> None:
        self._spawn(self._expire(session_id))

    async def _expire(self, session_id: str) -> None:
        session = self.state.find_by_id(session_id)
        reason = self._reaper.expired(session_id)
        if session is None:
            return
        if reason is None:  # used again since the timer fired
            self._reaper.recheck(session_id)
            return
        log.info("session %s: %s", session.name, reason)
        with contextlib.suppress(SessionNotFound):  # ended meanwhile
            await self.destroy(session, reason=reason)

    @contextlib.contextmanager
    def in_use(self, session: LiveSession) -> Iterator[None]:
        """The session is not idle while this is open (a streaming WebSocket)."""
        activity = session.activity
        activity.enter(self._clock.monotonic())
        try:
            yield
        finally:
            activity.leave(self._clock.monotonic())

    # -- agents come and go -----------------------------------------------------------

    def agent_joined(self) -> None:
        self._feed_later(AgentJoined())

    def orphans(self, agent_id: str, running: list[str]) -> list[str]:
        """Of the sessions an agent says it runs, those not live here on that agent."""
        return self.state.orphans(agent_id, running)

    def agent_reported(self, agent_id: str, running: list[str], restarted: bool) -> None:
        """An agent's heartbeat listed the sessions it runs (``AgentReported``)."""
        self._feed_later(AgentReported(agent_id, frozenset(running), restarted))

    async def expire_unconfirmed(self, after_s: float) -> None:
        """Sessions taken back at start whose agent has not reported for ``after_s``: lost."""
        if self.state.unconfirmed and time.monotonic() - self._recovered_at >= after_s:
            await self._feed(RecoveryWindowClosed())

    async def agent_lost(self, agent_id: str) -> None:
        await self._feed(AgentLost(agent_id))

    async def sandbox_gone(self, gone: SessionGone) -> None:
        await self._feed(SandboxDied(gone.session_id, gone.reason, gone.exit_code))

    # -- execution -----------------------------------------------------------------

    def agent_of(self, session: LiveSession) -> AgentClient:
        """The client of a RUNNING session's agent, for the calls the API edge makes
        itself (file transfers, bai.manager.api.files; wrap them in ``in_use``)."""
        self.state.require_running(session)
        return self._agents.client(session.agent_id)

    async def execute(self, session: LiveSession, request: ExecRequest) -> RunResult:
        self.state.require_running(session)
        if request.mode in ("query", "batch"):
            session.num_queries += 1
        activity = session.activity  # the hot path: no context manager (about 2 µs)
        activity.enter(self._clock.monotonic())
        try:
            result = await self._agents.client(session.agent_id).execute(request)
        finally:
            activity.leave(self._clock.monotonic())
        if result.status.goes_on:
            activity.run_continues(session.limits.exec_timeout_s)
        else:
            activity.run_ended(self._clock.monotonic())
            if result.stats is not None and result.stats.oom_kills:
                self._publish_oom(session, result)
        return result

    def _publish_oom(self, session: LiveSession, result: RunResult) -> None:
        """``session_oom`` (bai's own event; ``kernel_oom`` its twin): a run's process was
        killed for the memory limit and the session lives on. A session whose runner was
        killed ends instead, with ``session_failure``."""
        kills = result.stats.oom_kills if result.stats is not None else 0
        mem = session.requested.get("mem")
        limit = f" of {format_bytes(mem)}" if mem is not None else ""
        reason = f"oom-killed: {kills} process(es) of run {result.run_id} exceeded the memory limit{limit}"
        self._events.publish(
            SessionEvent("session_oom", session.id, session.name, session.access_key, reason, result.exit_code)
        )

    async def interrupt(self, session: LiveSession) -> None:
        self.state.require_running(session)
        with self.in_use(session):
            await self._agents.client(session.agent_id).interrupt(session.id)
        session.activity.run_ended(self._clock.monotonic())

    async def complete(self, session: LiveSession, request: CompleteRequest) -> list[str]:
        self.state.require_running(session)
        with self.in_use(session):
            return await self._agents.client(session.agent_id).complete(request)

    async def live_stats(self, session: LiveSession) -> dict[str, Any] | None:
        if session.status != SessionStatus.RUNNING:
            return session.last_stat
        try:
            stats = await self._agents.client(session.agent_id).session_stats(session.id)
        except BaiError:
            return session.last_stat
        return stats_payload(stats, "live")
