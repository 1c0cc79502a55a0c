"""The sessions' state machine: I/O free, no event loop.

``SessionStates`` holds every live session (its status, name, placement, the pending
queue, the sessions taken back at start that their agent has not confirmed yet). Its
state is changed only through ``handle(event)``, which returns the ``Action`` list the
caller performs, in order (as dask's worker state machine: "state is mutated only through
handle_stimulus"). The caller is ``SessionRegistry`` (bai.manager.sessions), the thin
async shell: it turns requests and what agents report into events, performs the actions
(store writes, published events, agent calls) and feeds each agent call's outcome back
as another event.

Events a request makes (``CreateRequested``, ``DestroyRequested``, ``RestartRequested``,
``RenameRequested``, ``CreateAbandoned``) are refused with the domain error the API edge maps
(SessionNotFound, InvalidRequest, QuotaExceeded, SessionAlreadyExists); events the world
makes (an agent's report, a sandbox that died) about a session that has ended meanwhile
change nothing and return no action.

A stop begins with ``StopBegun``: from then on nothing is created or placed, the sessions
still waiting for a place are cancelled, and whoever waits for a session to settle is
answered at once (a create request then replies with the status the session has): the
stop never waits on a request that waits on a session the stop has yet to end.

The per-run counters (``num_queries``, ``activity``) are the request path's: the shell
writes them without an event, as they decide no transition.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from bai.common.agent_rpc import SandboxSpec, SessionStats
from bai.common.errors import (
    InvalidRequest,
    QuotaExceeded,
    ServiceUnavailable,
    SessionAlreadyExists,
    SessionNotFound,
    TooManySessionsMatched,
)
from bai.common.limits import SessionLimits
from bai.common.resources import Slots, format_slots
from bai.common.status import SessionStatus
from bai.common.wire import SESSION_NAME_RE
from bai.manager import lifecycle
from bai.manager.environments import EnvironmentOffers
from bai.manager.events import SessionEvent
from bai.manager.policies import ResourcePolicy, check_total, session_limits, session_slots
from bai.manager.reaper import Activity
from bai.manager.scheduler import AgentCapacity, PendingSession, check_schedulable, schedule_fifo
from bai.manager.usage import stats_payload

S = SessionStatus

_EVENT_OF_STATUS = {
    S.PENDING: "session_enqueued",
    S.SCHEDULED: "session_scheduled",
    S.PREPARING: "session_preparing",
    S.RUNNING: "session_started",
    S.TERMINATING: "session_terminating",
    S.TERMINATED: "session_terminated",
    S.CANCELLED: "session_cancelled",
    S.ERROR: "session_failure",
}
SANDBOX_LOST = "sandbox-lost: its agent restarted without it"
AGENT_LOST = "agent-lost"
SERVER_STOPPING = "server-shutdown"
CLIENT_GONE = "client-gone: its create request's client went away before it was placed"
#: a ``match`` finding more is refused
MAX_MATCHES = 30


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
    #: what ``config.limits`` asks for (``policy`` unset)
    limits: SessionLimits = field(default_factory=SessionLimits)


@dataclass
class LiveSession:
    """One session's record. Live ones belong to ``SessionStates``; ``find`` also makes
    them from the store's rows of ended sessions."""

    id: str
    name: str
    access_key: str
    image: str
    type: str
    tag: str | None
    requested: Slots
    environ: dict[str, str]
    created_at: datetime
    status: SessionStatus = S.PENDING
    status_info: str | None = None
    agent_id: str | None = None
    terminated_at: datetime | None = None
    num_queries: int = 0
    last_stat: dict[str, Any] | None = None
    limits: SessionLimits = field(default_factory=lambda: SessionLimits(policy="default"))
    activity: Activity = field(default_factory=Activity)


class AgentView(Protocol):
    """What the state machine reads of the agents (``AgentRegistry``, in memory)."""

    def environments(self) -> EnvironmentOffers: ...

    def max_capacity(self) -> Slots: ...

    def capacities(self, occupied: dict[str, Slots]) -> list[AgentCapacity]: ...


# -- events ------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateRequested:
    session_id: str  # the id the session gets if it is new
    access_key: str
    concurrency_limit: int
    params: CreateParams
    policy: ResourcePolicy


@dataclass(frozen=True)
class StartBegun:
    """The task a ``StartSandbox`` spawned runs (it holds the session's lock)."""

    session_id: str


@dataclass(frozen=True)
class SandboxReady:
    session_id: str


@dataclass(frozen=True)
class CreateFailed:
    session_id: str
    message: str


@dataclass(frozen=True)
class DestroyRequested:
    session: LiveSession
    reason: str = "user-requested"


@dataclass(frozen=True)
class SandboxDestroyed:
    """The agent destroyed the sandbox (or could not: then ``stats`` are empty)."""

    session_id: str
    reason: str
    stats: SessionStats


@dataclass(frozen=True)
class RestartRequested:
    session: LiveSession


@dataclass(frozen=True)
class SandboxRestarted:
    session_id: str


@dataclass(frozen=True)
class RestartFailed:
    session_id: str
    message: str


@dataclass(frozen=True)
class RenameRequested:
    session: LiveSession
    new_name: str


@dataclass(frozen=True)
class SandboxDied:
    """An agent says a sandbox ended without being asked to."""

    session_id: str
    reason: str
    exit_code: int | None = None


@dataclass(frozen=True)
class SandboxMissing:
    """A restarted agent answered that it has no such session."""

    session_id: str


@dataclass(frozen=True)
class AgentJoined:
    pass


@dataclass(frozen=True)
class AgentLost:
    agent_id: str


@dataclass(frozen=True)
class AgentReported:
    """An agent's heartbeat: the sessions it runs; ``restarted``: a new boot id."""

    agent_id: str
    running: frozenset[str]
    restarted: bool = False


@dataclass(frozen=True)
class Recovered:
    """The store's sessions an earlier run of the manager left live."""

    sessions: tuple[LiveSession, ...]


@dataclass(frozen=True)
class RecoveryWindowClosed:
    """The agents had their time to confirm the sessions taken back at start."""


@dataclass(frozen=True)
class CreateAbandoned:
    """The client of the request that created the session went away while it waited for
    the session to start: a session still waiting for a place is cancelled (nobody is
    left to use it); one already placed goes on starting and is an ordinary session."""

    session_id: str


@dataclass(frozen=True)
class StopBegun:
    """The manager stops: see the module docstring."""


Event = (
    CreateRequested | StartBegun | SandboxReady | CreateFailed | DestroyRequested | SandboxDestroyed
    | RestartRequested | SandboxRestarted | RestartFailed | RenameRequested | SandboxDied | SandboxMissing
    | AgentJoined | AgentLost | AgentReported | Recovered | RecoveryWindowClosed | CreateAbandoned | StopBegun
)


# -- actions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Admitted:
    """The answer to ``CreateRequested``: the session, and whether it is new (else reused)."""

    session: LiveSession
    created: bool


@dataclass(frozen=True)
class Publish:
    event: SessionEvent


@dataclass(frozen=True)
class Persist:
    """Write the session's row, with its state when the write begins."""

    session: LiveSession


@dataclass(frozen=True)
class Settle:
    """The session runs or ended, or the manager stops: wake whoever waits for it to."""

    session_id: str


@dataclass(frozen=True)
class Watch:
    """Count idle time and lifetime (the reaper); the session started ``started_ago_s`` ago."""

    session_id: str
    started_ago_s: float = 0.0


@dataclass(frozen=True)
class Forget:
    """The session ended: stop watching it and drop what the shell holds for it."""

    session_id: str


@dataclass(frozen=True)
class StartSandbox:
    """Start the placed session in a task of its own, which feeds ``StartBegun``."""

    session_id: str


@dataclass(frozen=True)
class CreateSandbox:
    """Ask the agent; feed ``SandboxReady`` or ``CreateFailed``."""

    session_id: str
    agent_id: str
    spec: SandboxSpec


@dataclass(frozen=True)
class DestroySandbox:
    """Ask the agent; feed ``SandboxDestroyed`` whatever it answers."""

    session_id: str
    agent_id: str
    reason: str


@dataclass(frozen=True)
class RestartSandbox:
    """Ask the agent; feed ``SandboxRestarted`` or ``RestartFailed``."""

    session_id: str
    agent_id: str


@dataclass(frozen=True)
class CheckSandbox:
    """Ask a restarted agent whether it has the session; feed ``SandboxMissing`` if not."""

    session_id: str
    agent_id: str


Action = (
    Admitted | Publish | Persist | Settle | Watch | Forget | StartSandbox | CreateSandbox | DestroySandbox
    | RestartSandbox | CheckSandbox
)


def sandbox_spec(session: LiveSession) -> SandboxSpec:
    """What the agent is asked to start: the slots, and the limits it enforces."""
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


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SessionStates:
    """The live sessions and their transitions. ``agents`` is read, never called for I/O;
    ``clock`` stamps creation and termination (injected by tests)."""

    def __init__(
        self,
        agents: AgentView,
        default_resources: Slots,
        default_exec_timeout_s: float | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._agents = agents
        self._default_resources = default_resources
        self._default_exec_timeout_s = default_exec_timeout_s
        self._clock = clock
        self._live: dict[str, LiveSession] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._pending: list[str] = []
        #: sessions taken back at start that their agent has not listed yet → agent id
        self._unconfirmed: dict[str, str] = {}
        #: ``StopBegun`` came: nothing is created or placed any more
        self.stopping = False
        self._handlers: dict[type[Any], Callable[[Any], list[Action]]] = {
            CreateRequested: self._create,
            StartBegun: self._start,
            SandboxReady: self._ready,
            CreateFailed: self._create_failed,
            DestroyRequested: self._destroy,
            SandboxDestroyed: self._destroyed,
            RestartRequested: self._restart,
            SandboxRestarted: self._restarted,
            RestartFailed: self._restart_failed,
            RenameRequested: self._rename,
            SandboxDied: self._died,
            SandboxMissing: self._missing,
            AgentJoined: lambda _: self._schedule(),
            AgentLost: self._agent_lost,
            AgentReported: self._agent_reported,
            Recovered: self._recovered,
            RecoveryWindowClosed: self._window_closed,
            CreateAbandoned: self._abandoned,
            StopBegun: self._stop_begun,
        }

    def handle(self, event: Event) -> list[Action]:
        """Apply ``event``; the actions to perform, in order. Raises the domain error of a
        refused request (see the module docstring)."""
        return self._handlers[type(event)](event)

    # -- queries -------------------------------------------------------------------

    def live(self, access_key: str | None = None) -> list[LiveSession]:
        return [s for s in self._live.values() if access_key is None or s.access_key == access_key]

    def find_by_id(self, session_id: str) -> LiveSession | None:
        return self._live.get(session_id)

    def is_live(self, session: LiveSession) -> bool:
        return self._live.get(session.id) is session

    @property
    def unconfirmed(self) -> dict[str, str]:
        """Sessions taken back at start whose agent has not confirmed them → its id."""
        return dict(self._unconfirmed)

    @property
    def pending(self) -> list[str]:
        """The ids of the sessions waiting for a placement, oldest first."""
        return list(self._pending)

    def find_live(self, access_key: str, id_or_name: str) -> LiveSession:
        """A live session of ``access_key`` by id or name; SessionNotFound otherwise."""
        session = self._live.get(id_or_name)
        if session is not None and session.access_key == access_key:
            return session
        session_id = self._names.get((access_key, id_or_name))
        if session_id is not None:
            return self._live[session_id]
        raise SessionNotFound(f"no such session: {id_or_name}")

    def match(self, access_key: str, prefix: str) -> list[LiveSession]:
        found = [
            s for s in self._live.values()
            if s.access_key == access_key and (s.id.startswith(prefix) or s.name.startswith(prefix))
        ]
        if len(found) > MAX_MATCHES:
            raise TooManySessionsMatched(f"more than {MAX_MATCHES} sessions match {prefix!r}")
        return found

    def occupied(self) -> dict[str, Slots]:
        """Per agent, the slots its live sessions requested."""
        occupied: dict[str, Slots] = {}
        for s in self._live.values():
            if s.agent_id is not None:
                slots = occupied.setdefault(s.agent_id, {})
                for name, amount in s.requested.items():
                    slots[name] = slots.get(name, Decimal(0)) + amount
        return occupied

    def orphans(self, agent_id: str, running: Iterable[str]) -> list[str]:
        """Of the sessions an agent says it runs, those not live here on that agent.
        A session still being created is live here, so it is never taken for an orphan."""
        return [
            sid for sid in running
            if (session := self._live.get(sid)) is None or session.agent_id != agent_id
        ]

    @staticmethod
    def require_running(session: LiveSession) -> None:
        """InvalidRequest unless ``session`` is RUNNING (execute, files, terminals...)."""
        if session.status != S.RUNNING:
            detail = f" ({session.status_info})" if session.status_info else ""
            raise InvalidRequest(
                f"session {session.name} is {session.status}{detail}, not RUNNING", field="sessionId"
            )

    # -- create and start --------------------------------------------------------------

    def _create(self, event: CreateRequested) -> list[Action]:
        params, access_key = event.params, event.access_key
        if self.stopping:
            raise ServiceUnavailable("the server is stopping: it creates no sessions")
        if params.name is not None and (existing := self._named(access_key, params.name)) is not None:
            if params.reuse and existing.image == params.image:
                return [Admitted(existing, created=False)]
            raise SessionAlreadyExists(
                f"a session named {params.name!r} already exists"
                + ("" if existing.image == params.image else f" with image {existing.image!r}"),
                existing_session_id=existing.id,
            )
        requested = session_slots(params.resources, self._default_resources, event.policy)
        limits = session_limits(params.limits, event.policy, self._default_exec_timeout_s)
        check_schedulable(params.image, requested, self._agents.environments(), self._agents.max_capacity())
        mine = self.live(access_key)
        if len(mine) >= event.concurrency_limit:
            raise QuotaExceeded(
                f"the keypair runs {len(mine)} sessions, its concurrency limit is {event.concurrency_limit}"
            )
        check_total(event.policy, (s.requested for s in mine), requested)
        session = LiveSession(
            id=event.session_id,
            name=params.name or self._generate_name(access_key),
            access_key=access_key,
            image=params.image,
            type=params.type,
            tag=params.tag,
            requested=requested,
            environ=params.environ,
            created_at=self._clock(),
            limits=limits,
        )
        self._live[session.id] = session
        self._names[(access_key, session.name)] = session.id
        self._pending.append(session.id)
        # the placement starts while the row is written: the shell takes the session's
        # write lock before the start task first runs, so the insert still comes first
        return [Admitted(session, created=True), *self._published(session), *self._schedule(), Persist(session)]

    def _named(self, access_key: str, name: str) -> LiveSession | None:
        session_id = self._names.get((access_key, name))
        return None if session_id is None else self._live[session_id]

    def _generate_name(self, access_key: str) -> str:
        while True:
            name = f"sess-{secrets.token_hex(4)}"
            if (access_key, name) not in self._names:
                return name

    def _schedule(self) -> list[Action]:
        """Place what is pending; each placement starts in a task of its own."""
        if not self._pending or self.stopping:
            return []
        pending = [PendingSession(sid, self._live[sid].image, self._live[sid].requested) for sid in self._pending]
        actions: list[Action] = []
        for assignment in schedule_fifo(pending, self._agents.capacities(self.occupied())):
            self._pending.remove(assignment.session_id)
            self._live[assignment.session_id].agent_id = assignment.agent_id
            actions.append(StartSandbox(assignment.session_id))
        return actions

    def _start(self, event: StartBegun) -> list[Action]:
        session = self._live.get(event.session_id)
        if session is None or session.status != S.PENDING or session.agent_id is None:
            return []  # cancelled (or lost) between its placement and this task
        # SCHEDULED and PREPARING are published, not written (lifecycle.PERSISTED)
        actions = self._transition(session, S.SCHEDULED) + self._transition(session, S.PREPARING)
        return [*actions, CreateSandbox(session.id, session.agent_id, sandbox_spec(session))]

    def _ready(self, event: SandboxReady) -> list[Action]:
        session = self._live.get(event.session_id)
        if session is None or session.status != S.PREPARING:
            return []  # ended while the agent started it
        return [Watch(session.id), *self._transition(session, S.RUNNING)]

    def _abandoned(self, event: CreateAbandoned) -> list[Action]:
        session = self._live.get(event.session_id)
        if session is None or session.id not in self._pending:
            return []  # placed (it goes on starting), or ended
        return self._end(session, S.CANCELLED, CLIENT_GONE)

    def _stop_begun(self, event: StopBegun) -> list[Action]:
        self.stopping = True
        actions: list[Action] = []
        for session_id in list(self._pending):
            actions += self._end(self._live[session_id], S.CANCELLED, SERVER_STOPPING)
        return actions + [Settle(session_id) for session_id in self._live]

    def _create_failed(self, event: CreateFailed) -> list[Action]:
        session = self._live.get(event.session_id)
        if session is None:
            return []
        return self._end(session, S.ERROR, f"creation-failed: {event.message}")

    # -- requests on a live session ----------------------------------------------------------

    def _destroy(self, event: DestroyRequested) -> list[Action]:
        session = event.session
        if not self.is_live(session) or session.status in lifecycle.TERMINAL:
            raise SessionNotFound(f"no such session: {session.name} (it has ended)")
        if session.status in (S.PENDING, S.SCHEDULED):
            return self._end(session, S.CANCELLED, event.reason)
        assert session.agent_id is not None  # placed: past PENDING
        if session.status == S.TERMINATING:  # the destroy that began it was cancelled: ask again
            return [DestroySandbox(session.id, session.agent_id, event.reason)]
        actions = self._transition(session, S.TERMINATING, event.reason)
        return [*actions, DestroySandbox(session.id, session.agent_id, event.reason)]

    def _destroyed(self, event: SandboxDestroyed) -> list[Action]:
        session = self._live.get(event.session_id)
        if session is None or session.status != S.TERMINATING:
            return []  # lost with its agent meanwhile
        session.last_stat = stats_payload(event.stats, "terminated")
        return self._end(session, S.TERMINATED, event.reason)

    def _restart(self, event: RestartRequested) -> list[Action]:
        session = event.session
        self.require_running(session)
        if not self.is_live(session):
            raise SessionNotFound(f"no such session: {session.name} (it has ended)")
        assert session.agent_id is not None
        return [*self._transition(session, S.RESTARTING), RestartSandbox(session.id, session.agent_id)]

    def _restarted(self, event: SandboxRestarted) -> list[Action]:
        session = self._live.get(event.session_id)
        if session is None or session.status != S.RESTARTING:
            return []
        return self._transition(session, S.RUNNING)

    def _restart_failed(self, event: RestartFailed) -> list[Action]:
        session = self._live.get(event.session_id)
        if session is None:
            return []
        return self._end(session, S.ERROR, f"restart-failed: {event.message}")

    def _rename(self, event: RenameRequested) -> list[Action]:
        session, new_name = event.session, event.new_name
        if not SESSION_NAME_RE.match(new_name):
            raise InvalidRequest(f"name: {new_name!r} is not a valid session name", field="name")
        if self._names.get((session.access_key, new_name), session.id) != session.id:
            raise InvalidRequest(f"name: another session is already named {new_name!r}", field="name")
        if self.is_live(session):
            self._names.pop((session.access_key, session.name), None)
            self._names[(session.access_key, new_name)] = session.id
        session.name = new_name
        return [Persist(session)]

    # -- what agents report ---------------------------------------------------------------

    def _died(self, event: SandboxDied) -> list[Action]:
        session = self._live.get(event.session_id)
        if session is None or session.status in (S.TERMINATING, S.RESTARTING):
            return []  # asked for: its destroy or restart goes on
        return self._end(session, S.ERROR, f"sandbox-died: {event.reason}", event.exit_code)

    def _missing(self, event: SandboxMissing) -> list[Action]:
        session = self._live.get(event.session_id)
        if session is None or session.status != S.RUNNING:
            return []
        return self._end(session, S.ERROR, SANDBOX_LOST)

    def _agent_lost(self, event: AgentLost) -> list[Action]:
        actions: list[Action] = []
        for session in [s for s in self._live.values() if s.agent_id == event.agent_id]:
            actions += self._end(session, S.ERROR, AGENT_LOST)
        return actions

    def _agent_reported(self, event: AgentReported) -> list[Action]:
        """Sessions taken back at start are confirmed, or ended if the agent no longer runs
        them. When the agent itself restarted, each RUNNING session of it that it does not
        list is checked with it (it may have been created after the list was made)."""
        actions: list[Action] = []
        for session_id in [sid for sid, agent in self._unconfirmed.items() if agent == event.agent_id]:
            del self._unconfirmed[session_id]
            session = self._live.get(session_id)
            if session is not None and session_id not in event.running:
                actions += self._end(session, S.ERROR, SANDBOX_LOST)
        if event.restarted:
            actions += [
                CheckSandbox(s.id, event.agent_id) for s in self._live.values()
                if s.agent_id == event.agent_id and s.status == S.RUNNING and s.id not in event.running
            ]
        return actions

    def _recovered(self, event: Recovered) -> list[Action]:
        """A RUNNING session with an agent is live again at once, unconfirmed until that
        agent reports; one that was still being placed or started lost its request with
        the manager: ERROR."""
        now = self._clock()
        actions: list[Action] = []
        for session in event.sessions:
            if session.status == S.RUNNING and session.agent_id is not None:
                self._live[session.id] = session
                self._names[(session.access_key, session.name)] = session.id
                self._unconfirmed[session.id] = session.agent_id
                actions.append(Watch(session.id, max(0.0, (now - session.created_at).total_seconds())))
            else:
                session.status, session.status_info, session.terminated_at = S.ERROR, "manager-restarted", now
                actions.append(Persist(session))
        return actions

    def _window_closed(self, event: RecoveryWindowClosed) -> list[Action]:
        actions: list[Action] = []
        for session_id in list(self._unconfirmed):
            del self._unconfirmed[session_id]
            session = self._live.get(session_id)
            if session is not None:
                actions += self._end(session, S.ERROR, AGENT_LOST)
        return actions

    # -- transitions ------------------------------------------------------------------------

    def _transition(self, session: LiveSession, status: SessionStatus, info: str | None = None,
                    exit_code: int | None = None) -> list[Action]:
        lifecycle.check_transition(session.status, status)
        session.status, session.status_info = status, info
        actions: list[Action] = []
        if status in lifecycle.SETTLED:
            actions.append(Settle(session.id))
        if status in lifecycle.PERSISTED:
            actions.append(Persist(session))
        return actions + self._published(session, exit_code)

    def _end(self, session: LiveSession, status: SessionStatus, reason: str,
             exit_code: int | None = None) -> list[Action]:
        """Move to a terminal status, release the name and the slots, and place what waits."""
        session.terminated_at = self._clock()
        self._live.pop(session.id, None)
        self._names.pop((session.access_key, session.name), None)
        self._unconfirmed.pop(session.id, None)
        if session.id in self._pending:
            self._pending.remove(session.id)
        actions = self._transition(session, status, reason, exit_code)
        if status == S.TERMINATED:
            actions.append(Publish(_event("session_success", session, reason, exit_code)))
        return [*actions, Forget(session.id), *self._schedule()]

    @staticmethod
    def _published(session: LiveSession, exit_code: int | None = None) -> list[Action]:
        name = _EVENT_OF_STATUS.get(session.status)
        return [] if name is None else [Publish(_event(name, session, session.status_info or "", exit_code))]


def _event(name: str, s: LiveSession, reason: str, exit_code: int | None = None) -> SessionEvent:
    return SessionEvent(name, s.id, s.name, s.access_key, reason, exit_code)

