"""``EmbeddedServer``: a manager, an agent and the HTTP server in one process.

On first start in a data dir it creates the admin keypair; on every start it
writes ``<data dir>/client.env`` (mode 0600) with the ``export BACKEND_...``
lines for the current endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from bai.agent.agent import Agent
from bai.agent.config import AgentConfig
from bai.common.agent_rpc import AgentInfo, SessionGone
from bai.manager.api.app import create_app
from bai.manager.config import ManagerConfig
from bai.manager.core import Manager
from bai.server.links import InProcessAgentLink

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Credentials:
    endpoint: str
    access_key: str
    secret_key: str
    created: bool  # the keypair was made by this start

    def env_lines(self) -> str:
        return (
            f"export BACKEND_ENDPOINT={self.endpoint}\n"
            f"export BACKEND_ACCESS_KEY={self.access_key}\n"
            f"export BACKEND_SECRET_KEY={self.secret_key}\n"
        )


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bai"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, without a moment of wider permissions."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: ``bai server`` owns SIGINT/SIGTERM, so a
    stop always goes through ``EmbeddedServer.stop`` and destroys the sandboxes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EmbeddedServer:
    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 8091,
                 log_level: str = "warning", *, heartbeat_interval_s: float = 1.0,
                 agent_lost_after_s: float = 10.0) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.log_level = log_level
        self.heartbeat_interval_s = heartbeat_interval_s
        self.manager = Manager(ManagerConfig(data_dir=data_dir, host=host, port=port,
                                             cluster_secret=secrets.token_hex(16),
                                             agent_lost_after_s=agent_lost_after_s))
        self.agent = Agent(AgentConfig(data_dir=data_dir / "agent", agent_id="embedded",
                                       rpc_url="inproc://embedded"))
        self._uvicorn: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.credentials: Credentials | None = None

    async def start(self) -> Credentials:
        """Start everything; returns when the API answers. Idempotent per instance: call once."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await self.manager.start()
        await self.agent.start()
        self.agent.on_session_gone = self._sandbox_gone
        self.manager.agents.register_link_factory("inproc", self._link_for)
        self.manager.agent_heartbeat(self.agent.info())
        self.resume_heartbeats()
        keypair, created = await self.manager.ensure_admin_keypair()
        await self._serve()
        endpoint = f"http://{self._display_host()}:{self.port}"
        self.credentials = Credentials(endpoint, keypair.access_key, keypair.secret_key, created)
        write_private(self.data_dir / "client.env", self.credentials.env_lines())
        return self.credentials

    def _display_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def _link_for(self, info: AgentInfo) -> InProcessAgentLink:
        return InProcessAgentLink(self.agent)

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

    async def _serve(self) -> None:
        config = uvicorn.Config(
            create_app(self.manager), host=self.host, port=self.port, log_level=self.log_level,
            server_header=False, date_header=False, lifespan="off", ws="websockets-sansio",
        )
        server = _Uvicorn(config)
        self._uvicorn = server
        self._serve_task = asyncio.get_running_loop().create_task(server.serve())
        while not server.started:
            if self._serve_task.done():
                self._serve_task.result()
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.005)
        sockets = [sock for srv in server.servers for sock in srv.sockets]
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        if self._uvicorn is not None and self._serve_task is not None:
            self._uvicorn.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve_task
        await self.manager.stop()
        await self.agent.stop()
