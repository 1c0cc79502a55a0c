"""Resource policies against create requests, and the idle / lifetime decisions: no I/O."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from bai.common.errors import InvalidRequest, QuotaExceeded
from bai.common.limits import SessionLimits
from bai.common.wire import CreateSessionRequest, ResourcePolicyFields
from bai.manager.api.deps import validate
from bai.manager.policies import (
    ResourcePolicy,
    check_total,
    policy_changes,
    session_limits,
    session_slots,
)
from bai.manager.reaper import IDLE_TIMEOUT, MAX_LIFETIME, RUN_GRACE_S, Activity, Reaper, verdict
from tests.manual_clock import ManualClock
from tests.waiting import HANG_S

D = Decimal
POLICY = ResourcePolicy(
    name="default",
    max_session_slots={"cpu": D(2), "mem": D(2**30)},
    total_resource_slots={"cpu": D(3)},
    max_pids=256,
    idle_timeout_s=3600,
    exec_timeout_s=60,
)


def test_the_request_wins_within_the_policy_and_the_policy_fills_in() -> None:
    req = SessionLimits.model_validate({"pids": 64, "scratch": "512m", "idleTimeout": 10, "output": 1000})
    limits = session_limits(req, POLICY)
    assert limits == SessionLimits(
        policy="default",
        pids=64,
        scratch_bytes=512 * 2**20,
        exec_timeout_s=60,
        idle_timeout_s=10,
        max_lifetime_s=None,
        output_bytes=1000,
    )
    assert session_limits(SessionLimits(), POLICY).pids == 256


def test_the_managers_exec_timeout_applies_where_request_and_policy_are_silent() -> None:
    bare = ResourcePolicy(name="bare")
    assert session_limits(SessionLimits(), bare, 30.0).exec_timeout_s == 30.0
    assert session_limits(SessionLimits(exec_timeout_s=90), bare, 30.0).exec_timeout_s == 90
    assert session_limits(SessionLimits(), POLICY, 30.0).exec_timeout_s == 60


def test_a_request_above_the_policy_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        session_limits(SessionLimits(idle_timeout_s=7200), POLICY)
    assert caught.value.message == (
        'config.limits.idleTimeout: 7200 s exceeds the keypair\'s resource policy "default" (max 3600 s)'
    )
    assert caught.value.field == "config.limits.idleTimeout"
    with pytest.raises(InvalidRequest, match=r"config\.limits\.pids: 1000 .* \(max 256\)"):
        session_limits(SessionLimits(pids=1000), POLICY)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"pids": 2}, "config.limits.pids"),
        ({"scratch": "lots"}, "config.limits.scratch"),
        ({"scratch": 0}, "config.limits.scratch"),
        ({"execTimeout": -1}, "config.limits.execTimeout"),
        ({"idleTimeout": 0}, "config.limits.idleTimeout"),
        ({"maxLifetime": float("inf")}, "config.limits.maxLifetime"),
        ({"output": "-5"}, "config.limits.output"),
    ],
)
def test_nonsense_limits_are_refused(raw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:  # as the API edge parses a create request
        validate(CreateSessionRequest, {"image": "python", "config": {"limits": raw}})
    assert caught.value.field == field
    assert caught.value.message.startswith(field + ": ")


def test_slots_within_the_per_session_maxima() -> None:
    defaults = {"cpu": D(1), "mem": D(4 * 2**30)}
    assert session_slots({}, defaults, POLICY) == {"cpu": D(1), "mem": D(2**30)}  # the default lowered
    assert session_slots({"cpu": D(2)}, defaults, POLICY)["cpu"] == D(2)
    with pytest.raises(InvalidRequest, match=r"config\.resources\.cpu: 3 exceeds .* \(max 2\)"):
        session_slots({"cpu": D(3)}, defaults, POLICY)
    assert session_slots({"cpu": D(8)}, defaults, ResourcePolicy(name="open"))["cpu"] == D(8)


def test_total_slots_count_the_keypairs_live_sessions() -> None:
    check_total(POLICY, [{"cpu": D(1)}, {"cpu": D(1)}], {"cpu": D(1)})
    with pytest.raises(QuotaExceeded, match=r'hold 4 in total; its resource policy "default" allows 3'):
        check_total(POLICY, [{"cpu": D(2)}, {"cpu": D(1)}], {"cpu": D(1)})
    check_total(ResourcePolicy(name="open"), [{"cpu": D(100)}], {"cpu": D(100)})


def test_policy_changes_parse_only_what_is_given() -> None:
    given = ResourcePolicyFields.model_validate(
        {"maxSessionSlots": {"cpu": "2", "mem": "4g"}, "idleTimeout": None, "max_scratch_bytes": "1g"}
    )
    assert policy_changes(given) == {
        "max_session_slots": {"cpu": D(2), "mem": D(4 * 2**30)},
        "idle_timeout_s": None,
        "max_scratch_bytes": 2**30,
    }
    with pytest.raises(InvalidRequest, match=r"^total_resource_slots\.cpu: "):
        policy_changes(ResourcePolicyFields.model_validate({"total_resource_slots": {"cpu": "many"}}))
    with pytest.raises(InvalidRequest, match=r"^max_session_slots\.mem: must be at least 16m"):
        policy_changes(ResourcePolicyFields.model_validate({"max_session_slots": {"mem": "1m"}}))
    with pytest.raises(InvalidRequest, match=r"^exec_timeout_s: must be a positive"):
        policy_changes(ResourcePolicyFields.model_validate({"exec_timeout_s": 0}))


# -- idle timeout and lifetime -----------------------------------------------------------


def _limits(idle: float | None = None, lifetime: float | None = None) -> SessionLimits:
    return SessionLimits(policy="p", idle_timeout_s=idle, max_lifetime_s=lifetime)


def test_an_unused_session_expires_after_its_idle_timeout() -> None:
    activity = Activity(last=100.0)
    assert verdict(activity, _limits(idle=10), started=100.0, now=105.0) == 110.0
    assert verdict(activity, _limits(idle=10), started=100.0, now=110.0) == IDLE_TIMEOUT
    assert verdict(activity, _limits(), started=100.0, now=1e9) is None


def test_a_request_in_flight_or_a_run_going_on_is_not_idle() -> None:
    activity = Activity(last=100.0, in_flight=1)
    assert verdict(activity, _limits(idle=10), started=100.0, now=500.0) == 510.0
    activity = Activity(last=100.0, run_until=float("inf"))
    assert verdict(activity, _limits(idle=10), started=100.0, now=500.0) == 510.0
    # a run unseen since its exec timeout (and grace) passed counts as ended then
    activity = Activity(last=100.0, run_until=200.0)
    assert verdict(activity, _limits(idle=10), started=100.0, now=205.0) == 210.0
    assert verdict(activity, _limits(idle=10), started=100.0, now=210.0) == IDLE_TIMEOUT


def test_the_lifetime_ends_even_a_busy_session() -> None:
    activity = Activity(last=100.0, in_flight=3)
    assert verdict(activity, _limits(idle=10, lifetime=50), started=100.0, now=120.0) == 130.0
    assert verdict(activity, _limits(idle=10, lifetime=50), started=100.0, now=150.0) == MAX_LIFETIME


def test_activity_marks() -> None:
    activity = Activity()
    activity.enter(10.0)
    assert (activity.in_flight, activity.last) == (1, 10.0)
    activity.leave(12.0)
    assert (activity.in_flight, activity.last) == (0, 12.0)
    activity.run_continues(exec_timeout_s=None)
    assert activity.run_until == float("inf")
    activity.run_ended(13.0)
    assert (activity.run_until, activity.last) == (None, 13.0)
    activity.run_continues(exec_timeout_s=30)
    assert activity.run_until == 13.0 + 30 + RUN_GRACE_S
    activity.run_continues(exec_timeout_s=30)  # seen going on again: still counted from the first
    assert activity.run_until == 13.0 + 30 + RUN_GRACE_S


async def test_the_reaper_ends_an_idle_session_at_its_deadline_and_a_used_one_once_unused() -> None:
    """On a clock the test moves: ``sweep`` looks as each timer would at its deadline."""
    clock = ManualClock()
    fired: list[tuple[str, str]] = []
    reaper = Reaper(lambda sid, reason: fired.append((sid, reason)), clock.as_clock())
    start = clock.monotonic()
    idle, used = Activity(last=start), Activity(last=start)
    reaper.watch("idle", idle, _limits(idle=10))
    reaper.watch("used", used, _limits(idle=10))
    reaper.watch("free", Activity(last=start), _limits())  # no limits: not watched at all
    used.enter(start)
    clock.advance(9)
    assert reaper.sweep() == [] and fired == []
    clock.advance(1)
    assert reaper.sweep() == ["idle"]
    assert fired == [("idle", IDLE_TIMEOUT)]
    assert reaper.expired("idle") == IDLE_TIMEOUT and reaper.expired("used") is None
    assert reaper.sweep() == []  # handed over once; its owner ends it
    used.leave(clock.monotonic())
    clock.advance(9)
    assert reaper.sweep() == []
    clock.advance(1)
    assert reaper.sweep() == ["used"]
    assert fired[-1] == ("used", IDLE_TIMEOUT)
    reaper.close()


async def test_the_reapers_timer_fires_by_itself() -> None:
    """The path production takes, with no sweep: the timer armed at ``watch`` fires at the
    deadline, on the system's clock (waited for as an event; the timeout bounds a hang)."""
    fired: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    reaper = Reaper(lambda sid, reason: fired.put_nowait((sid, reason)))
    reaper.watch("short", Activity(last=time.monotonic()), _limits(lifetime=0.05))
    assert await asyncio.wait_for(fired.get(), HANG_S) == ("short", MAX_LIFETIME)
    reaper.close()


def test_limits_take_snake_case_too() -> None:
    raw = {"idle_timeout": 5, "max_lifetime": 9, "exec_timeout": 3}
    limits = SessionLimits.model_validate(raw)
    assert (limits.idle_timeout_s, limits.max_lifetime_s, limits.exec_timeout_s) == (5, 9, 3)


def test_sizes_over_the_policy_are_said_in_binary_units() -> None:
    small = ResourcePolicy(
        name="small", max_session_slots={"mem": D(4 * 2**30)}, total_resource_slots={"mem": D(6 * 2**30)},
        max_scratch_bytes=512 * 2**20,
    )
    with pytest.raises(InvalidRequest) as caught:
        session_slots({"mem": D(32 * 2**30)}, {}, small)
    assert caught.value.message == (
        'config.resources.mem: 32 GiB exceeds the keypair\'s resource policy "small" (max 4 GiB)'
    )
    assert caught.value.field == "config.resources.mem"
    with pytest.raises(InvalidRequest, match=r"config\.limits\.scratch: 1 GiB exceeds .* \(max 512 MiB\)"):
        session_limits(SessionLimits(scratch_bytes="1g"), small)
    with pytest.raises(QuotaExceeded, match=r"would hold 7\.5 GiB in total; .* allows 6 GiB"):
        check_total(small, [{"mem": D(4 * 2**30)}], {"mem": D(3.5 * 2**30)})


def test_one_limits_model_reads_every_spelling_and_writes_each_where_it_goes() -> None:
    limits = SessionLimits.model_validate(
        {"resourcePolicy": "p", "scratch": "1m", "execTimeout": 5, "idle_timeout": 6, "outputBytes": 10}
    )
    assert limits.model_dump(exclude_none=True) == {  # GET /session/{id}'s "limits"
        "resourcePolicy": "p", "scratchBytes": 2**20, "execTimeout": 5.0, "idleTimeout": 6.0, "outputBytes": 10,
    }
    stored = limits.to_json()
    assert stored["policy"] == "p" and stored["scratch_bytes"] == 2**20
    assert SessionLimits.from_json(stored) == limits
