"""``GET /admin/agents``: the agents the manager knows, with their capacity, load and
warm pool (admin keypairs only)."""

from __future__ import annotations

import time
from decimal import Decimal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bai.common.resources import format_slots
from bai.common.wire import AgentList, AgentStatus
from bai.manager.agents import AgentState
from bai.manager.api.deps import caller, manager_of, require_admin


def agent_status(agent: AgentState, occupied: dict[str, Decimal], sessions: int, now: float) -> AgentStatus:
    info = agent.info
    return AgentStatus(
        agent_id=info.agent_id,
        status="ALIVE" if agent.alive else "LOST",
        backend=info.backend,
        version=info.version,
        rpc_url=info.rpc_url,
        environments=sorted(info.environments),
        capacity=dict(info.capacity),
        occupied=format_slots(occupied),
        sessions=sessions,
        pool=dict(info.pool),
        last_heartbeat_s=round(max(0.0, now - agent.last_seen), 3),
    )


async def list_agents(request: Request) -> Response:
    require_admin(await caller(request))
    manager = manager_of(request)
    occupied = manager.sessions.occupied()
    counts: dict[str, int] = {}
    for session in manager.sessions.live_sessions():
        if session.agent_id is not None:
            counts[session.agent_id] = counts.get(session.agent_id, 0) + 1
    now = time.monotonic()
    items = [
        agent_status(agent, occupied.get(agent.info.agent_id, {}), counts.get(agent.info.agent_id, 0), now)
        for agent in sorted(manager.agents.all(), key=lambda a: a.info.agent_id)
    ]
    return JSONResponse(AgentList(items=items).model_dump())
