"""The agent registry: which agents exist, what they offer, whether they are
alive, and the ``AgentClient`` (bai.manager.agent_client) through which the manager
calls each.

A client is made by the factory registered for the scheme of the agent's ``rpc_url``:
``inproc://`` by the embedded server (bai.server.agent_client), ``http://`` by the manager
when it has a cluster secret (bai.manager.agent_http).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from bai.common.agent_rpc import AgentInfo
from bai.common.errors import ServiceUnavailable
from bai.common.resources import Slots
from bai.manager.agent_client import AgentClient
from bai.manager.environments import EnvironmentOffers
from bai.manager.scheduler import AgentCapacity

ClientFactory = Callable[[AgentInfo], AgentClient]


@dataclass
class AgentState:
    info: AgentInfo
    client: AgentClient
    last_seen: float
    alive: bool = True

    @property
    def capacity(self) -> Slots:
        return {name: Decimal(value) for name, value in self.info.capacity.items()}


class AgentRegistry:
    def __init__(self, lost_after_s: float) -> None:
        self.lost_after_s = lost_after_s
        self._agents: dict[str, AgentState] = {}
        self._factories: dict[str, ClientFactory] = {}
        self._retired: list[AgentClient] = []  # clients of addresses agents left, to close
        self._closing: set[asyncio.Task[None]] = set()

    def register_client_factory(self, scheme: str, factory: ClientFactory) -> None:
        self._factories[scheme] = factory

    def heartbeat(self, info: AgentInfo, now: float | None = None) -> tuple[AgentState, bool, bool]:
        """Record a heartbeat; returns the agent, whether it is new (or back from LOST) and
        whether it restarted since its last heartbeat (another boot id)."""
        now = time.monotonic() if now is None else now
        state = self._agents.get(info.agent_id)
        restarted = state is not None and state.info.boot_id != info.boot_id
        if state is not None and state.info.rpc_url == info.rpc_url:
            revived = not state.alive
            state.info, state.last_seen, state.alive = info, now, True
            return state, revived, restarted
        scheme = info.rpc_url.split("://", 1)[0]
        factory = self._factories.get(scheme)
        if factory is None:
            raise ServiceUnavailable(f"agent {info.agent_id}: no client for {scheme}:// addresses")
        if state is not None:
            self._retire(state.client)
        state = AgentState(info=info, client=factory(info), last_seen=now)
        self._agents[info.agent_id] = state
        return state, True, restarted

    def _retire(self, client: AgentClient) -> None:
        """Close the client of an address its agent left (it came back on another port):
        at once where an event loop runs, else at ``close``."""
        try:
            task = asyncio.get_running_loop().create_task(client.close())
        except RuntimeError:
            self._retired.append(client)
            return
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def find_lost(self, now: float | None = None) -> list[AgentState]:
        """Mark agents silent for too long as lost and return the newly lost ones."""
        now = time.monotonic() if now is None else now
        lost = [a for a in self._agents.values() if a.alive and now - a.last_seen > self.lost_after_s]
        for agent in lost:
            agent.alive = False
        return lost

    def get(self, agent_id: str) -> AgentState | None:
        return self._agents.get(agent_id)

    def client(self, agent_id: str | None) -> AgentClient:
        """The client of a live agent; ServiceUnavailable for an unknown or lost one."""
        state = self._agents.get(agent_id or "")
        if state is None or not state.alive:
            raise ServiceUnavailable(f"agent {agent_id} is not available")
        return state.client

    def alive(self) -> list[AgentState]:
        return [a for a in self._agents.values() if a.alive]

    def all(self) -> list[AgentState]:
        return list(self._agents.values())

    def capacities(self, occupied: dict[str, Slots]) -> list[AgentCapacity]:
        """Free slots of each live agent, given what its sessions occupy."""
        out = []
        for agent in self.alive():
            used = occupied.get(agent.info.agent_id, {})
            free = {name: total - used.get(name, Decimal(0)) for name, total in agent.capacity.items()}
            out.append(AgentCapacity(agent.info.agent_id, free, frozenset(agent.info.environments)))
        return out

    def max_capacity(self) -> Slots:
        """The largest amount of each slot any single agent has: a request above it can never run."""
        best: Slots = {}
        for agent in self.alive():
            for name, total in agent.capacity.items():
                best[name] = max(best.get(name, Decimal(0)), total)
        return best

    def environments(self) -> EnvironmentOffers:
        """What the live agents can start, and what they know but cannot (with why not)."""
        return EnvironmentOffers.of(agent.info for agent in self.alive())

    async def close(self) -> None:
        await asyncio.gather(*self._closing)
        for client in [*self._retired, *(agent.client for agent in self._agents.values())]:
            await client.close()
