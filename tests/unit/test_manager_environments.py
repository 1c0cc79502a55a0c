"""What the agents offer, as the manager sees it: the ``GET /environments`` rows and the
create-time check that tells an environment no agent can start from one nobody knows."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bai.common.agent_rpc import AgentInfo
from bai.common.errors import InvalidRequest
from bai.manager.environments import EnvironmentOffers
from bai.manager.scheduler import check_schedulable

NOT_BUILT = "not built: run `bai env build ml:2`"


def agent(agent_id: str, environments: list[str], unavailable: dict[str, str] | None = None) -> AgentInfo:
    return AgentInfo(agent_id=agent_id, rpc_url=f"inproc://{agent_id}", backend="local", capacity={"cpu": "4"},
                     environments=environments, version="test", unavailable=unavailable or {})  # fmt: skip


OFFERS = EnvironmentOffers.of([
    agent("a1", ["python", "python:3.11", "ml", "ml:2"]),
    agent("a2", ["python", "python:3.11"], {"ml": NOT_BUILT, "ml:2": NOT_BUILT, "lua:5.4": "no lua5.4 on PATH"}),
    agent("d1", ["r"]),  # an agent that names environments without tags
])  # fmt: skip


def test_the_listing_has_a_row_per_tag_with_who_can_and_why_not() -> None:
    rows = {(row.name, row.tag): row for row in OFFERS.listing()}
    assert list(rows) == [("lua", "5.4"), ("ml", "2"), ("python", "3.11"), ("r", None)]
    assert (rows["ml", "2"].available, rows["ml", "2"].agents, rows["ml", "2"].unavailable) == (
        True, ["a1"], {"a2": NOT_BUILT},
    )  # fmt: skip
    assert (rows["lua", "5.4"].available, rows["lua", "5.4"].agents) == (False, [])
    assert rows["lua", "5.4"].unavailable == {"a2": "no lua5.4 on PATH"}
    assert rows["python", "3.11"].agents == ["a1", "a2"] and rows["python", "3.11"].unavailable == {}
    assert rows["r", None].agents == ["d1"]


def test_an_agent_that_can_start_it_is_no_reason_to_refuse() -> None:
    check_schedulable("ml", {"cpu": Decimal(1)}, OFFERS, {"cpu": Decimal(4)})
    check_schedulable("ml:2", {}, OFFERS, {"cpu": Decimal(4)})


def test_known_but_not_startable_names_the_reason_and_the_remedy() -> None:
    only_a2 = EnvironmentOffers.of([agent("a2", ["python"], {"ml": NOT_BUILT, "ml:2": NOT_BUILT})])
    for image in ("ml", "ml:2"):
        with pytest.raises(InvalidRequest) as refused:
            check_schedulable(image, {}, only_a2, {"cpu": Decimal(4)})
        assert str(refused.value) == f"image: {image!r} is not available (agent a2): {NOT_BUILT}"
        assert refused.value.field == "image"


def test_the_reason_says_how_many_agents_it_stands_for() -> None:
    two = EnvironmentOffers.of([agent(name, [], {"lua": "no lua on PATH"}) for name in ("b", "a")])
    with pytest.raises(InvalidRequest, match=r"^image: 'lua' is not available \(agent a and 1 other\(s\)\): no lua"):
        check_schedulable("lua", {}, two, {})


def test_an_environment_nobody_knows_is_unknown() -> None:
    with pytest.raises(InvalidRequest, match=r"^image: unknown environment 'cobol' \(available: ml, ml:2, python"):
        check_schedulable("cobol", {}, OFFERS, {"cpu": Decimal(4)})
    with pytest.raises(InvalidRequest, match="none: no agent is connected"):
        check_schedulable("python", {}, EnvironmentOffers.of([]), {})
