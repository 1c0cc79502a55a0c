"""The warm pool's I/O-free core (bai.agent.pool.PoolBook), without an event loop."""

from __future__ import annotations

from bai.agent.pool import MAX_RETRY_DELAY_S, PoolBook, startup_variables
from bai.common.agent_rpc import AgentInfo


def filled(target: int = 2) -> PoolBook:
    book = PoolBook({"python": target})
    for i in range(book.wanted("python")):
        book.launched("python")
        assert book.started("python", f"p{i}")
    return book


def test_wants_the_target_minus_ready_and_starting() -> None:
    book = PoolBook({"python": 3})
    assert book.wanted("python") == 3
    book.launched("python")
    book.launched("python")
    assert book.wanted("python") == 1
    book.started("python", "a")
    assert book.wanted("python") == 1
    assert book.counts() == {"python": 1}


def test_size_zero_and_unknown_environments_have_no_pool() -> None:
    book = PoolBook({"python": 0})
    assert not book.serves("python")
    assert book.wanted("python") == 0
    assert book.claim("python") is None
    assert book.claim("ruby") is None
    assert book.counts() == {}


def test_claim_hands_each_sandbox_out_once_oldest_first() -> None:
    book = filled()
    assert book.claim("python") == "p0"
    assert book.claim("python") == "p1"
    assert book.claim("python") is None
    assert book.wanted("python") == 2
    assert book.dropped("p0") is None  # claimed: no longer the pool's


def test_an_idle_death_drops_it_and_asks_for_a_replacement() -> None:
    book = filled()
    assert book.dropped("p1") == "python"
    assert book.counts() == {"python": 1}
    assert book.wanted("python") == 1
    assert book.claim("python") == "p0"


def test_failures_back_off_and_a_success_resets() -> None:
    book = PoolBook({"python": 1})
    delays = []
    for _ in range(12):
        book.launched("python")
        delays.append(book.start_failed("python"))
    assert delays[0] == 0.1 and delays[1] == 0.2 and delays[-1] == MAX_RETRY_DELAY_S
    assert delays == sorted(delays)
    book.launched("python")
    book.started("python", "x")
    book.claim("python")
    book.launched("python")
    assert book.start_failed("python") == 0.1


def test_stop_returns_the_ready_ones_and_refuses_the_rest() -> None:
    book = filled()
    book.launched("python")  # in flight when stopped
    assert sorted(book.stop()) == ["p0", "p1"]
    assert not book.serves("python")
    assert book.wanted("python") == 0
    assert book.claim("python") is None
    assert not book.started("python", "late")  # the caller destroys it
    assert book.counts() == {"python": 0}


def test_startup_variables_send_a_session_cold() -> None:
    assert startup_variables({"A": "1", "HOME": "/x"}) == []
    assert startup_variables({"PYTHONPATH": "/x", "LANG": "C", "LC_ALL": "C", "LANGUAGE": "en"}) == [
        "LANG", "LC_ALL", "PYTHONPATH",
    ]


def test_agent_info_from_an_agent_without_a_pool_still_validates() -> None:
    body = {"agent_id": "a", "rpc_url": "inproc://a", "backend": "local", "capacity": {}, "environments": [],
            "version": "0.1.0"}
    assert AgentInfo.model_validate(body).pool == {}


def test_memory_pressure_empties_the_pool_until_it_is_gone() -> None:
    book = filled()
    book.launched("python")  # in flight when the pressure comes
    assert sorted(book.memory_pressure(True)) == ["p0", "p1"]
    assert book.wanted("python") == 0
    assert book.claim("python") is None
    assert not book.started("python", "late")  # the caller destroys it
    assert book.memory_pressure(True) == []
    assert book.memory_pressure(False) == []
    assert book.wanted("python") == 2
