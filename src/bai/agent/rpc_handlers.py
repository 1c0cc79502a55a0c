"""What the agent does for each call of the agent RPC (bai.common.agent_calls): every
declared call bound, once, to the ``Agent`` method of its name.

Both ways in go through here: the RPC routes (bai.agent.rpc) and the embedded server's
in-process client (bai.server.agent_client). Each binding is checked by mypy against its
call's declaration (request and answer types); ``AgentHandlers`` refuses to be built
when a declared call has no binding.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from bai.agent.agent import Agent
from bai.common import agent_calls as calls
from bai.common.agent_calls import CALLS, AgentCall, Call, Download, Upload, WebSocketCall
from bai.common.agent_rpc import AgentInfo, ByteStream, NoArguments, SessionRef, SessionStats, TerminalRequest
from bai.common.terminal import Terminal

Req = TypeVar("Req", bound=BaseModel)
Ans = TypeVar("Ans")

Handler = Callable[..., Awaitable[Any]]


class AgentHandlers:
    """One agent's handler of each declared call, looked up by the call."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._handlers: dict[str, Handler] = {}
        self._answers(calls.INFO, self._info)
        self._answers(calls.CREATE_SESSION, agent.create_session)
        self._answers(calls.DESTROY_SESSION, self._destroy_session)
        self._answers(calls.RESTART_SESSION, self._restart_session)
        self._answers(calls.EXECUTE, agent.execute)
        self._answers(calls.INTERRUPT, self._interrupt)
        self._answers(calls.COMPLETE, agent.complete)
        self._answers(calls.SESSION_STATS, self._session_stats)
        self._answers(calls.LIST_FILES, agent.list_files)
        self._receives(calls.UPLOAD_FILE, agent.upload_file)
        self._streams(calls.DOWNLOAD, agent.download)
        self._opens(calls.OPEN_TERMINAL, self._open_terminal)
        missing = [call.name for call in CALLS if call.name not in self._handlers]
        if missing:
            raise TypeError(f"agent calls without a handler: {', '.join(missing)}")

    # -- lookup, one per kind ------------------------------------------------------

    def call(self, call: Call[Req, Ans]) -> Callable[[Req], Awaitable[Ans]]:
        return self._handlers[call.name]

    def upload(self, call: Upload[Req]) -> Callable[[Req, AsyncIterator[bytes]], Awaitable[None]]:
        return self._handlers[call.name]

    def download(self, call: Download[Req]) -> Callable[[Req], Awaitable[ByteStream]]:
        return self._handlers[call.name]

    def websocket(self, call: WebSocketCall[Req]) -> Callable[[Req], Awaitable[Terminal]]:
        return self._handlers[call.name]

    # -- binding, one per kind: each checks the handler's types against the call's --------

    def _answers(self, call: Call[Req, Ans], handler: Callable[[Req], Awaitable[Ans]]) -> None:
        self._bind(call, handler)

    def _receives(self, call: Upload[Req], handler: Callable[[Req, AsyncIterator[bytes]], Awaitable[None]]) -> None:
        self._bind(call, handler)

    def _streams(self, call: Download[Req], handler: Callable[[Req], Awaitable[ByteStream]]) -> None:
        self._bind(call, handler)

    def _opens(self, call: WebSocketCall[Req], handler: Callable[[Req], Awaitable[Terminal]]) -> None:
        self._bind(call, handler)

    def _bind(self, call: AgentCall[BaseModel], handler: Handler) -> None:
        if call.name in self._handlers:
            raise TypeError(f"agent call {call.name} bound twice")
        self._handlers[call.name] = handler

    # -- the calls whose Agent method takes other arguments than the request ---------------

    async def _info(self, _: NoArguments) -> AgentInfo:
        return self.agent.info()

    async def _destroy_session(self, ref: SessionRef) -> SessionStats:
        return await self.agent.destroy_session(ref.session_id)

    async def _restart_session(self, ref: SessionRef) -> None:
        await self.agent.restart_session(ref.session_id)

    async def _interrupt(self, ref: SessionRef) -> None:
        await self.agent.interrupt(ref.session_id)

    async def _session_stats(self, ref: SessionRef) -> SessionStats:
        return await self.agent.session_stats(ref.session_id)

    async def _open_terminal(self, request: TerminalRequest) -> Terminal:
        return await self.agent.open_terminal(request.session_id, request.rows, request.cols)
