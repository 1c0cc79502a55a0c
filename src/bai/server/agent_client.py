"""The in-process agent link: the manager calls the embedded agent's methods
directly, with no serialisation and no socket in between."""

from __future__ import annotations

from collections.abc import AsyncIterator

from bai.agent.agent import Agent
from bai.common.agent_rpc import (
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
from bai.common.terminal import Terminal
from bai.manager.agents import AgentLink


class InProcessAgentLink(AgentLink):
    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    async def create_session(self, spec: SandboxSpec) -> None:
        await self._agent.create_session(spec)

    async def destroy_session(self, session_id: str) -> SessionStats:
        return await self._agent.destroy_session(session_id)

    async def restart_session(self, session_id: str) -> None:
        await self._agent.restart_session(session_id)

    async def execute(self, request: ExecRequest) -> ExecResult:
        return await self._agent.execute(request)

    async def interrupt(self, session_id: str) -> None:
        await self._agent.interrupt(session_id)

    async def complete(self, request: CompleteRequest) -> list[str]:
        return await self._agent.complete(request)

    async def session_stats(self, session_id: str) -> SessionStats:
        return await self._agent.session_stats(session_id)

    async def upload_file(self, request: FileUpload, chunks: AsyncIterator[bytes]) -> None:
        await self._agent.upload_file(request, chunks)

    async def download(self, request: FileDownload) -> ByteStream:
        return await self._agent.download(request)

    async def list_files(self, request: FileListRequest) -> FileListing:
        return await self._agent.list_files(request)

    async def open_terminal(self, session_id: str, rows: int, cols: int) -> Terminal:
        return await self._agent.open_terminal(session_id, rows, cols)
