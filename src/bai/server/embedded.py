"""``EmbeddedServer``: a manager, an agent and the HTTP server in one process.

On first start in a data dir it creates the admin keypair; on every start it
writes ``<data dir>/client.env`` (mode 0600) with the ``export BACKEND_...``
lines for the current endpoint. Its stop keeps to a time budget
(bai.common.stopping).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from bai.agent.agent import Agent
from bai.agent.config import AgentConfig
from bai.common.agent_rpc import AgentInfo, SessionGone
from bai.common.stopping import DEFAULT_STOP_TIMEOUT_S, StopBudget
from bai.manager.config import ManagerConfig
from bai.manager.core import Manager
from bai.manager.serve import ApiServer, Credentials
from bai.server.agent_client import InProcessAgentClient


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bai"


class EmbeddedServer:
    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 8091,
                 log_level: str = "warning", *, heartbeat_interval_s: float = 1.0,
                 agent_lost_after_s: float = 10.0, backend: str | None = None,
                 keep_sessions: bool = False, stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        self.data_dir = data_dir
        #: what ``stop`` may take (``bai server`` ends its event loop within the same budget)
        self.stop_budget = StopBudget(stop_timeout_s)
        self.heartbeat_interval_s = heartbeat_interval_s
        agent_config = AgentConfig(data_dir=data_dir / "agent", agent_id="embedded", rpc_url="inproc://embedded")
        if backend:  # else BAI_AGENT_BACKEND, or local
            agent_config = agent_config.model_copy(update={"backend": backend})
        if keep_sessions:  # else BAI_AGENT_KEEP_SESSIONS
            agent_config = agent_config.model_copy(update={"keep_sessions": True})
        self.agent = Agent(agent_config)
        # sessions are kept only where their sandboxes outlive the process (docker)
        keep = agent_config.keep_sessions and self.agent.backend.reattachable
        self.manager = Manager(ManagerConfig(data_dir=data_dir, host=host, port=port,
                                             cluster_secret=secrets.token_hex(16),
                                             agent_lost_after_s=agent_lost_after_s, keep_sessions=keep))
        self.api = ApiServer(self.manager, host, port, log_level)
        self._heartbeat_task: asyncio.Task[None] | None = None

    async def start(self) -> Credentials:
        """Start everything; returns when the API answers. Call once per instance."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await self.manager.start()
        await self.agent.start()
        self.agent.on_session_gone = self._sandbox_gone
        self.manager.agents.register_client_factory("inproc", self._client_for)
        self.manager.agent_heartbeat(self.agent.info())
        self.resume_heartbeats()
        await self.api.start()
        return await self.api.publish_credentials(self.data_dir)

    async def stop(self) -> None:
        """Stop within ``stop_budget``: first no request waits on a session any more
        (``Manager.begin_stop``), then the HTTP server drains, the manager destroys the
        sessions (or leaves them, ``keep_sessions``) and the agent stops. A step that
        overruns the budget is logged with what it waited on and abandoned; the rows of
        sessions it left live are reconciled by the next start (``SessionRegistry.recover``)."""
        budget = self.stop_budget
        budget.begin()
        self.pause_heartbeats()
        await budget.step("ending the waits on sessions", self.manager.begin_stop())
        await budget.step("draining the HTTP server", self.api.stop())
        await budget.step("destroying the sessions", self.manager.stop())
        await budget.step("stopping the agent", self.agent.stop())

    def _client_for(self, info: AgentInfo) -> InProcessAgentClient:
        return InProcessAgentClient(self.agent)

    async def _sandbox_gone(self, gone: SessionGone) -> None:
        await self.manager.sessions.sandbox_gone(gone)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            self.manager.agent_heartbeat(self.agent.info())

    def pause_heartbeats(self) -> None:
        """Stop the agent's heartbeats, as if it hung (tests of agent loss use this)."""
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            self._heartbeat_task = None

    def resume_heartbeats(self) -> None:
        if self._heartbeat_task is None:
            self._heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeat())
