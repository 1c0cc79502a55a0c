"""``InProcessAgentClient``: the embedded server's client of its own agent. Each call goes
straight to the agent's handler of it (bai.agent.rpc_handlers, the same the RPC routes
use), with no serialisation and no socket; its errors are admitted by the call's
declaration (bai.common.agent_calls) as over HTTP, so both modes raise the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NoReturn, TypeVar

from pydantic import BaseModel

from bai.agent.agent import Agent
from bai.agent.rpc_handlers import AgentHandlers
from bai.common.agent_calls import AgentCall, Call, Download, Upload, WebSocketCall
from bai.common.agent_rpc import ByteStream
from bai.common.errors import BaiError
from bai.common.terminal import Terminal
from bai.manager.agent_client import AgentClient

Req = TypeVar("Req", bound=BaseModel)
Ans = TypeVar("Ans")


class InProcessAgentClient(AgentClient):
    def __init__(self, agent: Agent) -> None:
        self._handlers = AgentHandlers(agent)

    async def send_call(self, call: Call[Req, Ans], request: Req) -> Ans:
        try:
            return await self._handlers.call(call)(request)
        except BaiError as exc:
            _raise_admitted(call, exc)

    async def send_upload(self, call: Upload[Req], request: Req, chunks: AsyncIterator[bytes]) -> None:
        try:
            await self._handlers.upload(call)(request, chunks)
        except BaiError as exc:
            _raise_admitted(call, exc)

    async def send_download(self, call: Download[Req], request: Req) -> ByteStream:
        try:
            return await self._handlers.download(call)(request)
        except BaiError as exc:
            _raise_admitted(call, exc)

    async def open_websocket(self, call: WebSocketCall[Req], request: Req) -> Terminal:
        try:
            return await self._handlers.websocket(call)(request)
        except BaiError as exc:
            _raise_admitted(call, exc)


def _raise_admitted(call: AgentCall[BaseModel], exc: BaiError) -> NoReturn:
    """Raise ``exc`` as ``call`` admits it. (A try block, not a context manager: the
    execute hot path pays nothing when no error is raised.)"""
    error = call.admit(exc)
    if error is exc:
        raise exc
    raise error from exc
