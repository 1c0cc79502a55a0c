"""The agent registry: which agents exist, what they offer, whether they are
alive; and ``AgentLink``, the interface through which the manager calls one.

Links are chosen by the agent's ``rpc_url`` scheme from ``LINK_FACTORIES``:
``inproc://`` links are registered by the embedded server, ``http://`` ones use
the agent RPC (bai.manager.agent_http).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal

from bai.common.agent_rpc import (
    AgentInfo,
    ByteStream,
    CompleteRequest,
    ExecRequest,
    ExecResult,
    FileDownload,
    FileListing,
    FileListRequest,
    FileUpload,
    SandboxSpec,
    SessionStats,
)
from bai.common.errors import NotImplementedFeature, ServiceUnavailable
from bai.common.resources import Slots
from bai.common.terminal import Terminal
from bai.manager.scheduler import AgentCapacity


class AgentLink(ABC):
    """How the manager reaches one agent. Called by SessionRegistry only."""

    @abstractmethod
    async def create_session(self, spec: SandboxSpec) -> None:
        """Start a sandbox; returns when it is ready to execute. Raises SessionCreationFailed."""

    @abstractmethod
    async def destroy_session(self, session_id: str) -> SessionStats:
        """Stop a sandbox and return its final usage."""

    @abstractmethod
    async def restart_session(self, session_id: str) -> None:
        """Replace the sandbox with a fresh one on the same scratch dir."""

    @abstractmethod
    async def execute(self, request: ExecRequest) -> ExecResult:
        """Start, continue or feed input to a run; answers within the request's flush timeout."""

    @abstractmethod
    async def interrupt(self, session_id: str) -> None: ...

    @abstractmethod
    async def complete(self, request: CompleteRequest) -> list[str]: ...

    @abstractmethod
    async def session_stats(self, session_id: str) -> SessionStats: ...

    @abstractmethod
    async def upload_file(self, request: FileUpload, chunks: AsyncIterator[bytes]) -> None:
        """Write one file into the session's /home/work from ``chunks`` (streamed, not
        held whole). Raises InvalidRequest naming the path, RequestTooLarge, StorageFull."""

    @abstractmethod
    async def download(self, request: FileDownload) -> ByteStream:
        """``multipart/mixed``, one tar per path; path errors are raised before the
        stream starts. The caller must exhaust or close ``chunks``."""

    @abstractmethod
    async def list_files(self, request: FileListRequest) -> FileListing: ...

    async def open_terminal(self, session_id: str, rows: int, cols: int) -> Terminal:
        """A shell on a new pty in the session's sandbox (API.md section 6, terminal).
        Raises InvalidRequest naming rows / cols, ExecutionFailed."""
        raise NotImplementedFeature("this agent's link has no terminals")

    async def close(self) -> None:
        """Release connections; the agent itself keeps running."""


LinkFactory = Callable[[AgentInfo], AgentLink]


@dataclass
class AgentState:
    info: AgentInfo
    link: AgentLink
    last_seen: float
    alive: bool = True

    @property
    def capacity(self) -> Slots:
        return {name: Decimal(value) for name, value in self.info.capacity.items()}


class AgentRegistry:
    def __init__(self, lost_after_s: float) -> None:
        self.lost_after_s = lost_after_s
        self._agents: dict[str, AgentState] = {}
        self._factories: dict[str, LinkFactory] = {}

    def register_link_factory(self, scheme: str, factory: LinkFactory) -> None:
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
            raise ServiceUnavailable(f"agent {info.agent_id}: no link for {scheme}:// addresses")
        state = AgentState(info=info, link=factory(info), last_seen=now)
        self._agents[info.agent_id] = state
        return state, True, restarted

    def find_lost(self, now: float | None = None) -> list[AgentState]:
        """Mark agents silent for too long as lost and return the newly lost ones."""
        now = time.monotonic() if now is None else now
        lost = [a for a in self._agents.values() if a.alive and now - a.last_seen > self.lost_after_s]
        for agent in lost:
            agent.alive = False
        return lost

    def get(self, agent_id: str) -> AgentState | None:
        return self._agents.get(agent_id)

    def link(self, agent_id: str | None) -> AgentLink:
        state = self._agents.get(agent_id or "")
        if state is None or not state.alive:
            raise ServiceUnavailable(f"agent {agent_id} is not available")
        return state.link

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

    def environments(self) -> set[str]:
        return {env for agent in self.alive() for env in agent.info.environments}

    async def close(self) -> None:
        for agent in self._agents.values():
            await agent.link.close()
