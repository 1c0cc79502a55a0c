"""The sessions' state machine (bai.manager.session_state): its transitions, the actions
each returns, and the requests it refuses. No event loop, no store, no agent: the agents
are a fixed view, the clock is injected."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bai.common.agent_rpc import SessionStats
from bai.common.errors import (
    InvalidRequest,
    QuotaExceeded,
    ServiceUnavailable,
    SessionAlreadyExists,
    SessionNotFound,
)
from bai.common.limits import SessionLimits
from bai.common.resources import Slots
from bai.common.status import SessionStatus as S
from bai.manager.environments import EnvironmentOffers
from bai.manager.policies import ResourcePolicy
from bai.manager.scheduler import AgentCapacity
from bai.manager.session_state import (
    CLIENT_GONE,
    SERVER_STOPPING,
    Action,
    Admitted,
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

D = Decimal
GiB = 2**30
T0 = datetime(2026, 1, 1, tzinfo=UTC)
OPEN = ResourcePolicy(name="open")


@dataclass
class Agents:
    """One agent ("a1") offering python, with ``cpu`` cores and 4 GiB."""

    cpu: int = 4
    envs: frozenset[str] = frozenset({"python"})
    capacity: Slots = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.capacity = {"cpu": D(self.cpu), "mem": D(4 * GiB)}

    def environments(self) -> EnvironmentOffers:
        return EnvironmentOffers(startable={env: {"a1"} for env in self.envs})

    def max_capacity(self) -> Slots:
        return dict(self.capacity)

    def capacities(self, occupied: dict[str, Slots]) -> list[AgentCapacity]:
        used = occupied.get("a1", {})
        free = {name: total - used.get(name, D(0)) for name, total in self.capacity.items()}
        return [AgentCapacity("a1", free, self.envs)]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def machine(cpu: int = 4) -> tuple[SessionStates, Clock]:
    clock = Clock()
    return SessionStates(Agents(cpu), {"cpu": D(1), "mem": D(GiB)}, 30.0, clock=clock), clock


def request(sid: str, name: str | None = None, *, cpu: int = 1, reuse: bool = False,
            resources: Slots | None = None, limit: int = 10, policy: ResourcePolicy = OPEN,
            image: str = "python") -> CreateRequested:
    params = CreateParams(
        name=name, image=image, type="interactive", tag=None,
        resources={"cpu": D(cpu)} if resources is None else resources,
        environ={}, reuse=reuse, limits=SessionLimits(),
    )
    return CreateRequested(sid, "AK", limit, params, policy)


def published(actions: list[Action]) -> list[str]:
    return [a.event.name for a in actions if isinstance(a, Publish)]


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def running(states: SessionStates, sid: str, name: str | None = None) -> LiveSession:
    actions = states.handle(request(sid, name))
    session = actions[0].session if isinstance(actions[0], Admitted) else None
    assert session is not None
    states.handle(StartBegun(sid))
    states.handle(SandboxReady(sid))
    assert session.status == S.RUNNING
    return session


# -- create and start ------------------------------------------------------------------


def test_create_admits_publishes_places_and_writes_in_that_order() -> None:
    states, _ = machine()
    actions = states.handle(request("s1", "first"))
    assert kinds(actions) == ["Admitted", "Publish", "StartSandbox", "Persist"]
    admitted = actions[0]
    assert isinstance(admitted, Admitted) and admitted.created
    session = admitted.session
    assert (session.status, session.agent_id, session.created_at) == (S.PENDING, "a1", T0)
    assert session.requested == {"cpu": D(1), "mem": D(GiB)}  # the default fills in mem
    assert session.limits.exec_timeout_s == 30.0  # the manager's default
    assert published(actions) == ["session_enqueued"]
    assert states.find_live("AK", "first") is session


def test_a_start_prepares_then_runs_once_the_agent_says_ready() -> None:
    states, _ = machine()
    states.handle(request("s1", "first"))
    actions = states.handle(StartBegun("s1"))
    assert published(actions) == ["session_scheduled", "session_preparing"]
    create = actions[-1]
    assert isinstance(create, CreateSandbox) and create.agent_id == "a1"
    assert create.spec.resources == {"cpu": "1", "mem": str(GiB)} and create.spec.exec_timeout_s == 30.0
    actions = states.handle(SandboxReady("s1"))
    assert kinds(actions) == ["Watch", "Settle", "Persist", "Publish"]
    assert published(actions) == ["session_started"]
    assert states.find_live("AK", "s1").status == S.RUNNING


def test_a_failed_creation_ends_in_error_and_frees_the_name_and_the_place() -> None:
    states, clock = machine(cpu=1)
    states.handle(request("s1", "first"))
    waiting = states.handle(request("s2", "second"))
    assert "StartSandbox" not in kinds(waiting)  # no room: it waits behind s1
    assert states.pending == ["s2"]
    states.handle(StartBegun("s1"))
    clock.now = T0 + timedelta(seconds=3)
    actions = states.handle(CreateFailed("s1", "no image"))
    assert published(actions) == ["session_failure"]
    assert [a for a in actions if isinstance(a, (Forget, StartSandbox))] == [Forget("s1"), StartSandbox("s2")]
    with pytest.raises(SessionNotFound):
        states.find_live("AK", "first")
    assert states.pending == []


def test_a_start_whose_session_was_cancelled_meanwhile_does_nothing() -> None:
    states, _ = machine()
    session = states.handle(request("s1"))[0]
    assert isinstance(session, Admitted)
    states.handle(DestroyRequested(session.session))
    assert states.handle(StartBegun("s1")) == []
    assert states.handle(SandboxReady("s1")) == []


# -- refused requests -------------------------------------------------------------------


def test_a_taken_name_is_refused_or_reused() -> None:
    states, _ = machine()
    first = running(states, "s1", "taken")
    with pytest.raises(SessionAlreadyExists):
        states.handle(request("s2", "taken"))
    with pytest.raises(SessionAlreadyExists, match="with image 'python'"):
        states.handle(request("s2", "taken", reuse=True, image="r"))
    assert states.handle(request("s2", "taken", reuse=True)) == [Admitted(first, created=False)]


def test_the_concurrency_limit_and_the_policy_are_checked() -> None:
    states, _ = machine()
    running(states, "s1")
    with pytest.raises(QuotaExceeded, match="concurrency limit is 1"):
        states.handle(request("s2", limit=1))
    small = ResourcePolicy(name="small", max_session_slots={"mem": D(4 * GiB)})
    with pytest.raises(InvalidRequest, match=r"config\.resources\.mem: 32 GiB exceeds .* \(max 4 GiB\)"):
        states.handle(request("s2", resources={"mem": D(32 * GiB)}, policy=small))
    assert [s.id for s in states.live()] == ["s1"]  # nothing of a refused request stays


def test_an_unknown_slot_is_named_with_the_one_it_likely_means() -> None:
    states, _ = machine()
    with pytest.raises(InvalidRequest, match=r"config\.resources\.gpu: unknown resource slot 'gpu' "
                                             r"\(did you mean 'cuda\.device'\? known slots: cpu, mem") as caught:
        states.handle(request("s1", resources={"gpu": D(1)}))
    assert caught.value.field == "config.resources.gpu"
    with pytest.raises(InvalidRequest, match=r"config\.resources\.mem: 8 GiB is more than any agent has \(4 GiB\)"):
        states.handle(request("s1", resources={"mem": D(8 * GiB)}))


def test_an_ended_session_cannot_be_destroyed_nor_restarted() -> None:
    states, _ = machine()
    session = running(states, "s1", "gone")
    states.handle(SandboxDied("s1", "oom", 137))
    with pytest.raises(SessionNotFound, match="it has ended"):
        states.handle(DestroyRequested(session))
    with pytest.raises(InvalidRequest, match="is ERROR"):
        states.handle(RestartRequested(session))


def test_a_rename_to_a_taken_or_invalid_name_is_refused() -> None:
    states, _ = machine()
    session = running(states, "s1", "one1")
    running(states, "s2", "two2")
    with pytest.raises(InvalidRequest, match="already named"):
        states.handle(RenameRequested(session, "two2"))
    with pytest.raises(InvalidRequest, match="not a valid session name"):
        states.handle(RenameRequested(session, "x"))
    assert states.handle(RenameRequested(session, "three")) == [Persist(session)]
    assert states.find_live("AK", "three") is session


# -- destroy and restart ------------------------------------------------------------------


def test_a_pending_session_is_cancelled_without_its_agent() -> None:
    states, _ = machine(cpu=1)
    running(states, "s1")
    admitted = states.handle(request("s2"))[0]
    assert isinstance(admitted, Admitted) and states.pending == ["s2"]
    actions = states.handle(DestroyRequested(admitted.session, "user-requested"))
    assert published(actions) == ["session_cancelled"]
    assert not any(isinstance(a, DestroySandbox) for a in actions)
    assert admitted.session.status == S.CANCELLED and states.pending == []


def test_a_destroy_asks_the_agent_and_ends_when_it_answered() -> None:
    states, clock = machine()
    session = running(states, "s1")
    actions = states.handle(DestroyRequested(session, "idle-timeout"))
    assert published(actions) == ["session_terminating"]
    assert actions[-1] == DestroySandbox("s1", "a1", "idle-timeout")
    assert states.handle(SandboxDied("s1", "killed")) == []  # its own destroy: not a death
    clock.now = T0 + timedelta(minutes=1)
    actions = states.handle(SandboxDestroyed("s1", "idle-timeout", SessionStats(cpu_used_ms=5)))
    assert published(actions) == ["session_terminated", "session_success"]
    assert (session.status, session.status_info, session.terminated_at) == (S.TERMINATED, "idle-timeout", clock.now)
    assert session.last_stat is not None and session.last_stat["cpu_used"]["current"] == "5"


def test_a_destroy_answer_after_the_agent_was_lost_changes_nothing() -> None:
    states, _ = machine()
    session = running(states, "s1")
    states.handle(DestroyRequested(session))
    states.handle(AgentLost("a1"))
    assert session.status == S.ERROR
    assert states.handle(SandboxDestroyed("s1", "user-requested", SessionStats())) == []


def test_a_restart_runs_again_or_ends_in_error() -> None:
    states, _ = machine()
    session = running(states, "s1")
    assert states.handle(RestartRequested(session))[-1] == RestartSandbox("s1", "a1")
    assert states.handle(SandboxDied("s1", "replaced")) == []  # the old sandbox, as asked
    assert published(states.handle(SandboxRestarted("s1"))) == ["session_started"]
    states.handle(RestartRequested(session))
    actions = states.handle(RestartFailed("s1", "no room"))
    assert (session.status, session.status_info) == (S.ERROR, "restart-failed: no room")
    assert published(actions) == ["session_failure"]


# -- what agents report ---------------------------------------------------------------------


def test_a_sandbox_that_died_ends_its_session_with_the_exit_code() -> None:
    states, _ = machine()
    running(states, "s1")
    actions = states.handle(SandboxDied("s1", "runner exited", 137))
    failure = next(a for a in actions if isinstance(a, Publish)).event
    assert (failure.name, failure.reason, failure.exit_code) == ("session_failure", "sandbox-died: runner exited", 137)
    assert states.handle(SandboxDied("s1", "again")) == []  # ended: nothing more


def test_a_lost_agent_takes_its_sessions_with_it() -> None:
    states, _ = machine()
    a, b = running(states, "s1"), running(states, "s2")
    actions = states.handle(AgentLost("a1"))
    assert published(actions) == ["session_failure", "session_failure"]
    assert (a.status_info, b.status_info) == ("agent-lost", "agent-lost")
    assert states.occupied() == {}


def test_a_restarted_agent_has_its_unlisted_sessions_checked() -> None:
    states, _ = machine()
    running(states, "listed")
    running(states, "unlisted")
    assert states.handle(AgentReported("a1", frozenset({"listed"}))) == []
    actions = states.handle(AgentReported("a1", frozenset({"listed"}), restarted=True))
    assert actions == [CheckSandbox("unlisted", "a1")]
    actions = states.handle(SandboxMissing("unlisted"))
    assert published(actions) == ["session_failure"]
    assert states.orphans("a1", ["listed", "unlisted", "stranger"]) == ["unlisted", "stranger"]


def _left(sid: str, status: S, agent: str | None = "a1") -> LiveSession:
    return LiveSession(id=sid, name=f"n-{sid}", access_key="AK", image="python", type="interactive",
                       tag=None, requested={"cpu": D(1)}, environ={}, created_at=T0, status=status,
                       agent_id=agent)


def test_recovery_takes_back_what_ran_and_fails_what_was_starting() -> None:
    states, clock = machine()
    clock.now = T0 + timedelta(seconds=90)
    ran, starting = _left("r", S.RUNNING), _left("p", S.PREPARING)
    actions = states.handle(Recovered((ran, starting)))
    assert actions == [Watch("r", 90.0), Persist(starting)]
    assert (starting.status, starting.status_info) == (S.ERROR, "manager-restarted")
    assert states.unconfirmed == {"r": "a1"}
    assert states.find_live("AK", "n-r") is ran


def test_recovered_sessions_are_confirmed_or_lost() -> None:
    states, _ = machine()
    states.handle(Recovered((_left("kept", S.RUNNING), _left("lost", S.RUNNING), _left("other", S.RUNNING, "a2"))))
    actions = states.handle(AgentReported("a1", frozenset({"kept"})))
    assert published(actions) == ["session_failure"]
    assert states.unconfirmed == {"other": "a2"}
    actions = states.handle(RecoveryWindowClosed())
    assert [a.event.reason for a in actions if isinstance(a, Publish)] == ["agent-lost"]
    assert [s.id for s in states.live()] == ["kept"]


def test_every_terminal_transition_settles_and_forgets() -> None:
    states, _ = machine()
    session = running(states, "s1")
    actions = states.handle(SandboxDied("s1", "x"))
    assert Settle("s1") in actions and Forget("s1") in actions and Persist(session) in actions
    assert actions.index(Persist(session)) < actions.index(Forget("s1"))  # written before it is let go


# -- a request whose client went away; the stop ---------------------------------------------


def test_an_abandoned_create_is_cancelled_while_it_waits_for_a_place() -> None:
    states, _ = machine(cpu=1)
    running(states, "s1")
    waiting = states.handle(request("s2"))[0]
    assert isinstance(waiting, Admitted) and states.pending == ["s2"]
    actions = states.handle(CreateAbandoned("s2"))
    assert published(actions) == ["session_cancelled"]
    assert {"Settle", "Persist", "Forget"} <= set(kinds(actions))
    assert not any(isinstance(a, DestroySandbox) for a in actions)
    assert (waiting.session.status, waiting.session.status_info) == (S.CANCELLED, CLIENT_GONE)
    assert states.pending == [] and [s.id for s in states.live()] == ["s1"]


def test_an_abandoned_create_that_was_placed_goes_on_as_an_ordinary_session() -> None:
    states, _ = machine()
    states.handle(request("s1", "mine"))  # placed at once
    assert states.handle(CreateAbandoned("s1")) == []
    states.handle(StartBegun("s1"))
    assert states.handle(CreateAbandoned("s1")) == []  # starting: it goes on
    states.handle(SandboxReady("s1"))
    assert states.find_live("AK", "mine").status == S.RUNNING
    assert states.handle(CreateAbandoned("gone")) == []


def test_a_stop_cancels_what_waits_for_a_place_and_answers_every_waiter() -> None:
    states, _ = machine(cpu=2)
    running(states, "run")
    states.handle(request("prep"))
    states.handle(StartBegun("prep"))
    queued = states.handle(request("queued", cpu=2))[0]
    assert isinstance(queued, Admitted) and states.pending == ["queued"]
    actions = states.handle(StopBegun())
    assert published(actions) == ["session_cancelled"]
    assert (queued.session.status, queued.session.status_info) == (S.CANCELLED, SERVER_STOPPING)
    # the placed ones stay for the stop to destroy, and whoever waits on them is answered now
    assert {a.session_id for a in actions if isinstance(a, Settle)} == {"queued", "run", "prep"}
    assert sorted(s.id for s in states.live()) == ["prep", "run"]


def test_after_the_stop_began_nothing_is_created_or_placed() -> None:
    states, _ = machine(cpu=1)
    first = running(states, "s1")
    states.handle(StopBegun())
    with pytest.raises(ServiceUnavailable, match="stopping"):
        states.handle(request("s2"))
    actions = states.handle(DestroyRequested(first, SERVER_STOPPING))
    actions += states.handle(SandboxDestroyed("s1", SERVER_STOPPING, SessionStats()))
    assert not any(isinstance(a, StartSandbox) for a in actions)
    assert states.live() == []


def test_a_destroy_whose_first_try_was_cancelled_asks_the_agent_again() -> None:
    states, _ = machine()
    session = running(states, "s1")
    states.handle(DestroyRequested(session))  # its agent call was cancelled: still TERMINATING
    assert states.handle(DestroyRequested(session, SERVER_STOPPING)) == [DestroySandbox("s1", "a1", SERVER_STOPPING)]
    actions = states.handle(SandboxDestroyed("s1", SERVER_STOPPING, SessionStats()))
    assert session.status == S.TERMINATED and published(actions)[-1] == "session_success"
