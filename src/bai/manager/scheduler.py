"""Placement of pending sessions on agents: a pure function, FIFO.

Strict FIFO: the oldest pending session is placed first; when it fits no agent,
later ones wait behind it (no starvation of large requests). Among agents that
fit, the one with the most free CPU wins (spreads load).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from bai.common.errors import InvalidRequest
from bai.common.resources import KNOWN_SLOTS, Slots, fits, format_amount, subtract, unknown_slot
from bai.manager.environments import EnvironmentOffers


@dataclass(frozen=True)
class PendingSession:
    session_id: str
    image: str
    requested: Mapping[str, Decimal]


@dataclass(frozen=True)
class AgentCapacity:
    agent_id: str
    free: Mapping[str, Decimal]
    environments: frozenset[str]


@dataclass(frozen=True)
class Assignment:
    session_id: str
    agent_id: str


def environment_name(image: str) -> str:
    """``python:3.11`` and ``python`` are served by an agent offering ``python``."""
    return image.split(":", 1)[0]


def serves(environments: Collection[str], image: str) -> bool:
    """Whether an agent offering ``environments`` runs ``image``: the exact ``name:tag``,
    or the name where the agent lists no tag of it (an agent that lists names only)."""
    if image in environments:
        return True
    name = environment_name(image)
    return name in environments and not any(env.startswith(name + ":") for env in environments)


def check_schedulable(image: str, requested: Mapping[str, Decimal], environments: EnvironmentOffers,
                      largest: Mapping[str, Decimal]) -> None:
    """InvalidRequest naming the field when no agent could ever run the request: an
    environment none can start (known to an agent but not startable there: its reason, such
    as "not built: run `bai env build ...`"; else unknown), a slot nobody knows (with the
    slot it likely means), more of a slot than the largest agent has (``environments``:
    ``AgentRegistry.environments``, ``largest``: ``AgentRegistry.max_capacity``)."""
    available = environments.available()
    if not serves(available, image):
        why = sorted(environments.why_not(image).items())
        if why:
            agent, reason = why[0]
            where = f"agent {agent}" + (f" and {len(why) - 1} other(s)" if len(why) > 1 else "")
            raise InvalidRequest(f"image: {image!r} is not available ({where}): {reason}", field="image")
        known = ", ".join(sorted(available)) or "none: no agent is connected"
        raise InvalidRequest(f"image: unknown environment {image!r} (available: {known})", field="image")
    slots = [*KNOWN_SLOTS, *sorted(set(largest) - set(KNOWN_SLOTS))]
    for slot, amount in requested.items():
        where = f"config.resources.{slot}"
        if slot not in slots:
            raise InvalidRequest(f"{where}: {unknown_slot(slot, slots)}", field=where)
        most = largest.get(slot, Decimal(0))
        if amount > most:
            raise InvalidRequest(
                f"{where}: {format_amount(slot, amount)} is more than any agent has ({format_amount(slot, most)})",
                field=where,
            )


def schedule_fifo(pending: Sequence[PendingSession], agents: Sequence[AgentCapacity]) -> list[Assignment]:
    free: dict[str, Slots] = {a.agent_id: dict(a.free) for a in agents}
    envs = {a.agent_id: a.environments for a in agents}
    out: list[Assignment] = []
    for request in pending:
        candidates = [
            agent_id
            for agent_id, slots in free.items()
            if serves(envs[agent_id], request.image) and fits(request.requested, slots)
        ]
        if not candidates:
            break
        best = max(candidates, key=lambda agent_id: (free[agent_id].get("cpu", Decimal(0)), agent_id))
        free[best] = subtract(free[best], request.requested)
        out.append(Assignment(request.session_id, best))
    return out
