"""``AgentClient``: how the manager calls one agent, derived from the declaration of the
agent RPC (bai.common.agent_calls).

An implementation says only how each kind of call travels, in four methods
(``send_call``, ``send_upload``, ``send_download``, ``open_websocket``), and raises a
call's errors as its declaration ``admit``-s them. Two exist: ``HttpAgentClient``
(bai.manager.agent_http, for an agent in another process) and ``InProcessAgentClient``
(bai.server.agent_client, for the embedded server's agent). The registry picks one per agent by
the scheme of its ``rpc_url`` (bai.manager.agents).

The named methods are the declared calls with their arguments spelled out, one line
each: callers are SessionRegistry (the lifecycle and the runs), the manager's core
(orphan sandboxes) and the API's file and terminal routes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import TypeVar

from pydantic import BaseModel

from bai.common import agent_calls as calls
from bai.common.agent_calls import Call, Download, Upload, WebSocketCall
from bai.common.agent_rpc import (
    AgentInfo,
    ByteStream,
    CompleteRequest,
    ExecRequest,
    FileDownload,
    FileListing,
    FileListRequest,
    FileUpload,
    NoArguments,
    SandboxSpec,
    SessionRef,
    SessionStats,
    TerminalRequest,
)
from bai.common.terminal import Terminal
from bai.common.wire import RunResult

Req = TypeVar("Req", bound=BaseModel)
Ans = TypeVar("Ans")


class AgentClient(ABC):
    """The manager's client of one agent. Errors: what each call declares, plus
    ServiceUnavailable when the agent cannot be reached (bai.common.agent_calls)."""

    # -- how each kind of call travels ---------------------------------------------

    @abstractmethod
    async def send_call(self, call: Call[Req, Ans], request: Req) -> Ans:
        """A request answered by one value."""

    @abstractmethod
    async def send_upload(self, call: Upload[Req], request: Req, chunks: AsyncIterator[bytes]) -> None:
        """A request and a byte stream (read as it is sent, never held whole)."""

    @abstractmethod
    async def send_download(self, call: Download[Req], request: Req) -> ByteStream:
        """A request answered by a byte stream; the call's errors are raised before the
        stream starts. The caller must exhaust or close its ``chunks``."""

    @abstractmethod
    async def open_websocket(self, call: WebSocketCall[Req], request: Req) -> Terminal:
        """A request answered by a terminal, which the caller must close."""

    async def close(self) -> None:
        """Release connections; the agent itself keeps running."""

    # -- the declared calls -------------------------------------------------------

    async def info(self) -> AgentInfo:
        return await self.send_call(calls.INFO, NoArguments())

    async def create_session(self, spec: SandboxSpec) -> None:
        """Start a sandbox; returns when it is ready to execute."""
        await self.send_call(calls.CREATE_SESSION, spec)

    async def destroy_session(self, session_id: str) -> SessionStats:
        """Stop a sandbox and return its final usage."""
        return await self.send_call(calls.DESTROY_SESSION, SessionRef(session_id=session_id))

    async def restart_session(self, session_id: str) -> None:
        """Replace the sandbox with a fresh one on the same scratch dir."""
        await self.send_call(calls.RESTART_SESSION, SessionRef(session_id=session_id))

    async def execute(self, request: ExecRequest) -> RunResult:
        """Start, continue or feed input to a run; answers within the request's flush timeout."""
        return await self.send_call(calls.EXECUTE, request)

    async def interrupt(self, session_id: str) -> None:
        await self.send_call(calls.INTERRUPT, SessionRef(session_id=session_id))

    async def complete(self, request: CompleteRequest) -> list[str]:
        return await self.send_call(calls.COMPLETE, request)

    async def session_stats(self, session_id: str) -> SessionStats:
        return await self.send_call(calls.SESSION_STATS, SessionRef(session_id=session_id))

    async def list_files(self, request: FileListRequest) -> FileListing:
        return await self.send_call(calls.LIST_FILES, request)

    async def upload_file(self, request: FileUpload, chunks: AsyncIterator[bytes]) -> None:
        """Write one file into the session's /home/work from ``chunks``."""
        await self.send_upload(calls.UPLOAD_FILE, request, chunks)

    async def download(self, request: FileDownload) -> ByteStream:
        """``multipart/mixed``, one tar per path."""
        return await self.send_download(calls.DOWNLOAD, request)

    async def open_terminal(self, session_id: str, rows: int, cols: int) -> Terminal:
        """A shell on a new pty in the session's sandbox (API.md section 6, terminal)."""
        request = TerminalRequest(session_id=session_id, rows=rows, cols=cols)
        return await self.open_websocket(calls.OPEN_TERMINAL, request)
