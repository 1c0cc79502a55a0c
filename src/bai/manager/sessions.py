"""The session registry: lifecycle (create, reuse, destroy, restart), the
pending queue, and the relay of executions to agents.

Live sessions are held in memory (the hot path reads no rows); every status
change is written through to the ``sessions`` table. The registry is driven by
the API edge and by the agent registry (heartbeats, lost agents, sandboxes that
died); it never touches HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from bai.common.agent_rpc import (
    CompleteRequest,
    ExecRequest,
    ExecResult,
    SandboxSpec,
    SessionGone,
    SessionStats,
)
from bai.common.errors import (
    BaiError,
    InvalidRequest,
    QuotaExceeded,
    SessionAlreadyExists,
    SessionNotFound,
    SessionRestartFailed,
    TooManySessionsMatched,
)
from bai.common.resources import Slots, format_slots
from bai.common.wire import SESSION_NAME_RE
from bai.manager import lifecycle as st
from bai.manager.agents import AgentLink, AgentRegistry
from bai.manager.config import ManagerConfig
from bai.manager.events import EventBus, SessionEvent
from bai.manager.keypairs import Keypair
from bai.manager.policies import (
    RequestedLimits,
    ResourcePolicy,
    SessionLimits,
    check_total,
    session_limits,
    session_slots,
)
from bai.manager.reaper import Activity, Reaper
from bai.manager.scheduler import PendingSession, schedule_fifo, serves
from bai.manager.store.db import Database
from bai.manager.store.tables import SessionRow
from bai.manager.usage import stats_payload

log = logging.getLogger(__name__)

_EVENT_OF_STATUS = {
    st.PENDING: "session_enqueued",
    st.SCHEDULED: "session_scheduled",
    st.PREPARING: "session_preparing",
    st.RUNNING: "session_started",
    st.TERMINATING: "session_terminating",
    st.TERMINATED: "session_terminated",
    st.CANCELLED: "session_cancelled",
    st.ERROR: "session_failure",
}


@dataclass
class CreateParams:
    """A validated create request, in our terms."""

    name: str | None
    image: str
    type: str
    tag: str | None
    #: the slots the request names (the manager's defaults fill in the rest)
    resources: Slots
    environ: dict[str, str]
    reuse: bool
    limits: RequestedLimits = field(default_factory=RequestedLimits)


@dataclass
class LiveSession:
    id: str
    name: str
    access_key: str
    image: str
    type: str
    tag: str | None
    requested: Slots
    environ: dict[str, str]
    created_at: datetime
    status: str = st.PENDING
    status_info: str | None = None
    agent_id: str | None = None
    terminated_at: datetime | None = None
    num_queries: int = 0
    last_stat: dict[str, Any] | None = None
    limits: SessionLimits = field(default_factory=lambda: SessionLimits(policy="default"))
    activity: Activity = field(default_factory=Activity)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: one store write of this session at a time, each with the state at its start, so
    #: concurrent writes (create's and a placement's) neither race to insert nor land stale
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _session_values(session: LiveSession) -> dict[str, Any]:
    """The session's row, as the column values of one upsert."""
    return dict(
        id=session.id,
        name=session.name,
        access_key=session.access_key,
        image=session.image,
        type=session.type,
        tag=session.tag,
        status=session.status,
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
        status=row.status,
        status_info=row.status_info,
        agent_id=row.agent_id,
        terminated_at=aware(row.terminated_at),
        num_queries=row.num_queries,
        last_stat=row.last_stat,
        limits=SessionLimits.from_json(row.limits) if row.limits else SessionLimits(policy="default"),
    )


def _sandbox_spec(session: LiveSession) -> SandboxSpec:
    limits = session.limits
    resources = format_slots(session.requested)
    if limits.pids is not None:  # not a slot: the scheduler does not count it
        resources["pids"] = str(limits.pids)
    return SandboxSpec(
        session_id=session.id,
        session_name=session.name,
        environment=session.image,
        resources=resources,
        environ=session.environ,
        exec_timeout_s=limits.exec_timeout_s,
        scratch_bytes=limits.scratch_bytes,
        output_limit_bytes=limits.output_bytes,
    )


class SessionRegistry:
    def __init__(self, config: ManagerConfig, db: Database, agents: AgentRegistry, events: EventBus) -> None:
        self._config = config
        self._db = db
        self._agents = agents
        self._events = events
        self._live: dict[str, LiveSession] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._pending: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper = Reaper(self._on_expired)
        #: sessions taken back by ``recover`` that their agent has not listed yet → agent id
        self._unconfirmed: dict[str, str] = {}
        self._recovered_at = time.monotonic()

    # -- start and stop ----------------------------------------------------

    async def recover(self) -> None:
        """Take back the sessions an earlier run of the manager left live. A RUNNING one is
        live again at once, on its agent, until that agent's first heartbeat says whether it
        still runs it (``agent_reported``); an agent that does not come back within
        ``agent_lost_after_s`` loses it (``expire_unconfirmed``). One that was still
        being placed or started lost its request with the manager: ERROR."""
        now = datetime.now(UTC)
        async with self._db.sessionmaker() as s, s.begin():
            rows = (await s.scalars(select(SessionRow).where(SessionRow.status.not_in(st.TERMINAL)))).all()
            for row in rows:
                if row.status == st.RUNNING and row.agent_id:
                    self._take_back(_row_to_session(row), now)
                else:
                    row.status, row.status_info, row.terminated_at = st.ERROR, "manager-restarted", now
        self._recovered_at = time.monotonic()

    def _take_back(self, session: LiveSession, now: datetime) -> None:
        assert session.agent_id is not None
        self._live[session.id] = session
        self._names[(session.access_key, session.name)] = session.id
        self._unconfirmed[session.id] = session.agent_id
        session.settled.set()
        age = max(0.0, (now - session.created_at).total_seconds())
        self._reaper.watch(session.id, session.activity, session.limits, started=time.monotonic() - age)

    async def shutdown(self, keep_sessions: bool = False) -> None:
        """Destroy every live session (embedded mode stops its agent next); with
        ``keep_sessions``, leave them to their agents and the next start's ``recover``."""
        self._reaper.close()
        for task in list(self._tasks):
            task.cancel()
        if keep_sessions:
            return
        for session in list(self._live.values()):
            try:
                await self.destroy(session, reason="server-shutdown")
            except BaiError as exc:
                log.warning("session %s: %s", session.name, exc)

    # -- lookups -------------------------------------------------------------

    def live_sessions(self, access_key: str | None = None) -> list[LiveSession]:
        return [s for s in self._live.values() if access_key is None or s.access_key == access_key]

    def find_live(self, access_key: str, id_or_name: str) -> LiveSession:
        """A live session of ``access_key`` by id or name; SessionNotFound otherwise."""
        session = self._live.get(id_or_name)
        if session is not None and session.access_key == access_key:
            return session
        session_id = self._names.get((access_key, id_or_name))
        if session_id is not None:
            return self._live[session_id]
        raise SessionNotFound(f"no such session: {id_or_name}")

    async def find(self, access_key: str, id_or_name: str) -> LiveSession:
        """Like find_live, but also finds ended sessions in the store."""
        try:
            return self.find_live(access_key, id_or_name)
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
        found = [
            s for s in self._live.values() if s.access_key == access_key and (
                s.id.startswith(prefix) or s.name.startswith(prefix))
        ]
        if len(found) > 30:
            raise TooManySessionsMatched(f"more than 30 sessions match {prefix!r}")
        return found

    # -- create ------------------------------------------------------------------

    async def create(self, keypair: Keypair, params: CreateParams, policy: ResourcePolicy) -> tuple[LiveSession, bool]:
        """Create (or reuse) a session within the keypair's resource ``policy``; returns it and
        whether it is new. Does not wait for it."""
        if params.name is not None:
            existing_id = self._names.get((keypair.access_key, params.name))
            if existing_id is not None:
                existing = self._live[existing_id]
                if params.reuse and existing.image == params.image:
                    return existing, False
                raise SessionAlreadyExists(
                    f"a session named {params.name!r} already exists"
                    + ("" if existing.image == params.image else f" with image {existing.image!r}"),
                    existing_session_id=existing.id,
                )
        requested = session_slots(params.resources, self._config.default_resources, policy)
        limits = session_limits(params.limits, policy, self._config.exec_timeout_s)
        self._check_schedulable(params.image, requested)
        mine = [s for s in self._live.values() if s.access_key == keypair.access_key]
        if len(mine) >= keypair.concurrency_limit:
            raise QuotaExceeded(
                f"the keypair runs {len(mine)} sessions, its concurrency limit is {keypair.concurrency_limit}"
            )
        check_total(policy, (s.requested for s in mine), requested)
        name = params.name or self._generate_name(keypair.access_key)
        session = LiveSession(
            id=str(uuid.uuid4()),
            name=name,
            access_key=keypair.access_key,
            image=params.image,
            type=params.type,
            tag=params.tag,
            requested=requested,
            environ=params.environ,
            created_at=datetime.now(UTC),
            limits=limits,
        )
        self._live[session.id] = session
        self._names[(session.access_key, name)] = session.id
        self._pending.append(session.id)
        self._publish(session)
        self._schedule()
        # the placement starts while the row is written: _persist takes the session's
        # write lock before this task first yields, so the insert still comes first
        await self._persist(session)
        return session, True

    def _generate_name(self, access_key: str) -> str:
        while True:
            name = f"sess-{secrets.token_hex(4)}"
            if (access_key, name) not in self._names:
                return name

    def _check_schedulable(self, image: str, requested: Slots) -> None:
        environments = self._agents.environments()
        if not serves(environments, image):
            known = ", ".join(sorted(environments)) or "none: no agent is connected"
            raise InvalidRequest(f"image: unknown environment {image!r} (available: {known})",
                                 field="image")
        largest = self._agents.max_capacity()
        for slot, amount in requested.items():
            if amount > largest.get(slot, Decimal(0)):
                raise InvalidRequest(
                    f"config.resources.{slot}: {amount} is more than any agent has "
                    f"({largest.get(slot, Decimal(0))})",
                    field=f"config.resources.{slot}",
                )

    async def wait_settled(self, session: LiveSession, timeout_s: float | None) -> bool:
        """Wait until the session runs or ended; False when the timeout passed first."""
        try:
            await asyncio.wait_for(session.settled.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- scheduling and start ----------------------------------------------------

    def occupied(self) -> dict[str, Slots]:
        """Per agent, the slots its live sessions requested."""
        occupied: dict[str, Slots] = {}
        for s in self._live.values():
            if s.agent_id is not None:
                slots = occupied.setdefault(s.agent_id, {})
                for name, amount in s.requested.items():
                    slots[name] = slots.get(name, Decimal(0)) + amount
        return occupied

    def _schedule(self) -> None:
        """Place what is pending; each placement starts in its own task."""
        pending = [
            PendingSession(sid, self._live[sid].image, self._live[sid].requested) for sid in self._pending
        ]
        for assignment in schedule_fifo(pending, self._agents.capacities(self.occupied())):
            self._pending.remove(assignment.session_id)
            session = self._live[assignment.session_id]
            session.agent_id = assignment.agent_id
            self._spawn(self._start(session))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, session: LiveSession) -> None:
        async with session.lock:
            if session.status != st.PENDING:  # cancelled between placement and this task
                return
            # SCHEDULED and PREPARING are published, not written (lifecycle.PERSISTED)
            await self._transition(session, st.SCHEDULED)
            await self._transition(session, st.PREPARING)
            try:
                await self._agents.link(session.agent_id).create_session(_sandbox_spec(session))
            except BaiError as exc:
                log.warning("session %s failed to start: %s", session.name, exc)
                await self._end(session, st.ERROR, f"creation-failed: {exc.message}")
                return
            if session.status == st.PREPARING:
                session.activity.touch()  # idle time and lifetime count from the start
                self._reaper.watch(session.id, session.activity, session.limits)
                await self._transition(session, st.RUNNING)

    # -- idle timeout and lifetime ---------------------------------------------------

    def _on_expired(self, session_id: str, reason: str) -> None:
        self._spawn(self._expire(session_id))

    async def _expire(self, session_id: str) -> None:
        session = self._live.get(session_id)
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
        activity.enter()
        try:
            yield
        finally:
            activity.leave()

    async def rename(self, session: LiveSession, new_name: str) -> None:
        if not SESSION_NAME_RE.match(new_name):
            raise InvalidRequest(f"name: {new_name!r} is not a valid session name", field="name")
        if self._names.get((session.access_key, new_name), session.id) != session.id:
            raise InvalidRequest(f"name: another session is already named {new_name!r}", field="name")
        self._names.pop((session.access_key, session.name), None)
        self._names[(session.access_key, new_name)] = session.id
        session.name = new_name
        await self._persist(session)

    # -- the lifecycle after start ------------------------------------------------

    async def destroy(self, session: LiveSession, reason: str = "user-requested") -> SessionStats:
        async with session.lock:
            if session.status in st.TERMINAL:
                raise SessionNotFound(f"no such session: {session.name} (it has ended)")
            if session.status in (st.PENDING, st.SCHEDULED):
                if session.id in self._pending:
                    self._pending.remove(session.id)
                await self._end(session, st.CANCELLED, reason)
                return SessionStats()
            await self._transition(session, st.TERMINATING, reason)
            try:
                stats = await self._agents.link(session.agent_id).destroy_session(session.id)
            except BaiError as exc:
                log.warning("session %s: destroy on its agent failed: %s", session.name, exc)
                stats = SessionStats()
            session.last_stat = stats_payload(stats, "terminated")
            await self._end(session, st.TERMINATED, reason)
            return stats

    async def restart(self, session: LiveSession) -> None:
        async with session.lock:
            self._require_running(session)
            await self._transition(session, st.RESTARTING)
            session.activity.run_ended()
            try:
                await self._agents.link(session.agent_id).restart_session(session.id)
            except BaiError as exc:
                await self._end(session, st.ERROR, f"restart-failed: {exc.message}")
                raise SessionRestartFailed(f"session {session.name} could not restart: {exc.message}") from exc
            await self._transition(session, st.RUNNING)

    async def _transition(self, session: LiveSession, status: str, info: str | None = None) -> None:
        st.check_transition(session.status, status)
        session.status, session.status_info = status, info
        if status in st.SETTLED:
            session.settled.set()
        if status in st.PERSISTED:
            await self._persist(session)
        self._publish(session)

    async def _end(self, session: LiveSession, status: str, reason: str, exit_code: int | None = None) -> None:
        """Move to a terminal status, release the name and the slots, and place what waits."""
        session.terminated_at = datetime.now(UTC)
        self._reaper.forget(session.id)
        self._live.pop(session.id, None)
        self._names.pop((session.access_key, session.name), None)
        await self._transition(session, status, reason)
        if status == st.TERMINATED:
            self._events.publish(self._event("session_success", session, reason, exit_code))
        self._schedule()

    def _event(self, name: str, s: LiveSession, reason: str, exit_code: int | None = None) -> SessionEvent:
        return SessionEvent(name, s.id, s.name, s.access_key, reason, exit_code)

    def _publish(self, session: LiveSession) -> None:
        name = _EVENT_OF_STATUS.get(session.status)
        if name is not None:
            self._events.publish(self._event(name, session, session.status_info or ""))

    async def _persist(self, session: LiveSession) -> None:
        async with session.write_lock:
            await self._db.upsert(SessionRow, _session_values(session))

    # -- agents come and go -----------------------------------------------------------

    def agent_joined(self) -> None:
        self._schedule()

    def orphans(self, agent_id: str, running: list[str]) -> list[str]:
        """Of the sessions an agent says it runs, those not live here on that agent.
        A session still being created is live here, so it is never taken for an orphan."""
        return [
            sid for sid in running
            if (session := self._live.get(sid)) is None or session.agent_id != agent_id
        ]

    def agent_reported(self, agent_id: str, running: list[str], restarted: bool) -> None:
        """An agent's heartbeat listed the sessions it runs. Sessions taken back at the
        manager's start are confirmed, or ended if the agent no longer runs them. When the
        agent itself restarted (a new boot id), each RUNNING session of it that it does not
        list is checked with the agent and ended if it has no such session."""
        listed = set(running)
        for session_id in [sid for sid, agent in self._unconfirmed.items() if agent == agent_id]:
            del self._unconfirmed[session_id]
            session = self._live.get(session_id)
            if session is not None and session_id not in listed:
                self._spawn(self._end(session, st.ERROR, "sandbox-lost: its agent restarted without it"))
        if restarted:
            for session in [s for s in self._live.values() if s.agent_id == agent_id]:
                if session.status == st.RUNNING and session.id not in listed:
                    self._spawn(self._check_on_agent(session))

    async def _check_on_agent(self, session: LiveSession) -> None:
        """Whether a restarted agent still has ``session`` (it may have been created there
        after the heartbeat's list was made): end it when the agent says it has none."""
        try:
            await self._agents.link(session.agent_id).session_stats(session.id)
        except SessionNotFound:
            if self._live.get(session.id) is session and session.status == st.RUNNING:
                await self._end(session, st.ERROR, "sandbox-lost: its agent restarted without it")
        except BaiError as exc:
            log.warning("session %s: cannot check it on its restarted agent: %s", session.name, exc)

    async def expire_unconfirmed(self, after_s: float) -> None:
        """Sessions taken back at start whose agent has not reported for ``after_s``: lost."""
        if not self._unconfirmed or time.monotonic() - self._recovered_at < after_s:
            return
        for session_id in list(self._unconfirmed):
            del self._unconfirmed[session_id]
            session = self._live.get(session_id)
            if session is not None:
                await self._end(session, st.ERROR, "agent-lost")

    async def agent_lost(self, agent_id: str) -> None:
        for session in [s for s in self._live.values() if s.agent_id == agent_id]:
            await self._end(session, st.ERROR, "agent-lost")

    async def sandbox_gone(self, gone: SessionGone) -> None:
        session = self._live.get(gone.session_id)
        if session is None or session.status in (st.TERMINATING, st.RESTARTING):
            return
        await self._end(session, st.ERROR, f"sandbox-died: {gone.reason}", gone.exit_code)

    # -- execution -----------------------------------------------------------------

    def _require_running(self, session: LiveSession) -> None:
        if session.status != st.RUNNING:
            detail = f" ({session.status_info})" if session.status_info else ""
            raise InvalidRequest(
                f"session {session.name} is {session.status}{detail}, not RUNNING", field="sessionId"
            )

    def agent_of(self, session: LiveSession) -> AgentLink:
        """The link to a RUNNING session's agent, for the calls the API edge makes
        itself (file transfers, bai.manager.api.files; wrap them in ``in_use``)."""
        self._require_running(session)
        return self._agents.link(session.agent_id)

    async def execute(self, session: LiveSession, request: ExecRequest) -> ExecResult:
        self._require_running(session)
        if request.mode in ("query", "batch"):
            session.num_queries += 1
        activity = session.activity  # the hot path: no context manager (about 2 µs)
        activity.enter()
        try:
            result = await self._agents.link(session.agent_id).execute(request)
        finally:
            activity.leave()
        if result.status in ("continued", "clean-finished", "build-finished"):
            activity.run_continues(session.limits.exec_timeout_s)
        else:
            activity.run_ended()
            if result.stats is not None and result.stats.oom_kills:
                self._publish_oom(session, result)
        return result

    def _publish_oom(self, session: LiveSession, result: ExecResult) -> None:
        """``session_oom`` (bai's own event; ``kernel_oom`` its twin): a run's process was
        killed for the memory limit and the session lives on. A session whose runner was
        killed ends instead, with ``session_failure``."""
        kills = result.stats.oom_kills if result.stats is not None else 0
        mem = session.requested.get("mem")
        limit = f" of {int(mem) // 2**20} MiB" if mem is not None else ""
        reason = f"oom-killed: {kills} process(es) of run {result.run_id} exceeded the memory limit{limit}"
        self._events.publish(self._event("session_oom", session, reason, result.exit_code))

    async def interrupt(self, session: LiveSession) -> None:
        self._require_running(session)
        with self.in_use(session):
            await self._agents.link(session.agent_id).interrupt(session.id)
        session.activity.run_ended()

    async def complete(self, session: LiveSession, request: CompleteRequest) -> list[str]:
        self._require_running(session)
        with self.in_use(session):
            return await self._agents.link(session.agent_id).complete(request)

    async def live_stats(self, session: LiveSession) -> dict[str, Any] | None:
        if session.status != st.RUNNING:
            return session.last_stat
        try:
            stats = await self._agents.link(session.agent_id).session_stats(session.id)
        except BaiError:
            return session.last_stat
        return stats_payload(stats, "live")
