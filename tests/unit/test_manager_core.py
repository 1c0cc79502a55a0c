"""The manager's I/O-free cores: scheduler, state machine, rate limiter, resources."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from bai.common.resources import parse_size, parse_slots
from bai.common.status import SessionStatus as S
from bai.manager import lifecycle as st
from bai.manager.ratelimit import RateLimiter
from bai.manager.scheduler import AgentCapacity, PendingSession, schedule_fifo


def agent(agent_id: str, cpu: int, mem: int, envs: tuple[str, ...] = ("python",)) -> AgentCapacity:
    return AgentCapacity(agent_id, {"cpu": D(cpu), "mem": D(mem)}, frozenset(envs))


def pending(sid: str, cpu: int, mem: int = 1, image: str = "python") -> PendingSession:
    return PendingSession(sid, image, {"cpu": D(cpu), "mem": D(mem)})


def test_fifo_places_in_order_and_spreads_by_free_cpu() -> None:
    out = schedule_fifo([pending("a", 2), pending("b", 2), pending("c", 1)],
                        [agent("x", 4, 100), agent("y", 3, 100)])
    assert [(a.session_id, a.agent_id) for a in out] == [("a", "x"), ("b", "y"), ("c", "x")]


def test_fifo_head_of_line_blocks() -> None:
    out = schedule_fifo([pending("big", 8), pending("small", 1)], [agent("x", 4, 100)])
    assert out == []


def test_environment_must_be_offered_and_tags_are_ignored() -> None:
    out = schedule_fifo([pending("a", 1, image="python:3.11")], [agent("r", 4, 100, ("r",)),
                                                                 agent("p", 1, 100)])
    assert [(a.session_id, a.agent_id) for a in out] == [("a", "p")]


def test_memory_is_a_slot_too() -> None:
    assert schedule_fifo([pending("a", 1, mem=200)], [agent("x", 4, 100)]) == []


def test_state_machine() -> None:
    st.check_transition(S.PENDING, S.SCHEDULED)
    st.check_transition(S.RUNNING, S.TERMINATING)
    with pytest.raises(st.IllegalTransition):
        st.check_transition(S.TERMINATED, S.RUNNING)
    with pytest.raises(st.IllegalTransition):
        st.check_transition(S.PENDING, S.RUNNING)


def test_rate_limiter_rolls() -> None:
    limiter = RateLimiter(window_s=10)
    assert [limiter.hit("k", 3, t).remaining for t in (0, 1, 2)] == [2, 1, 0]
    assert not limiter.hit("k", 3, 5).allowed
    assert limiter.hit("other", 3, 5).allowed
    assert limiter.hit("k", 3, 10.5).allowed  # the hit at t=0 left the window


@pytest.mark.parametrize(("text", "size"), [("512m", 512 * 2**20), ("4g", 4 * 2**30), ("1.5GiB", 3 * 2**29),
                                            ("1024", 1024), (2048, 2048)])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_bad_slots_name_the_slot() -> None:
    with pytest.raises(ValueError, match=r"resources\.mem"):
        parse_slots({"mem": "lots"})
    with pytest.raises(ValueError, match=r"resources\.cpu"):
        parse_slots({"cpu": "-1"})
    with pytest.raises(ValueError, match=r"resources\.cpu"):
        parse_slots({"cpu": True})
