"""``InProcessAgentClient``: the embedded server's client of its own agent. Each call goes
straight to the agent's handler of it (bai.agent.rpc_handlers, the same the RPC routes
use), with no serialisation and no socket; its errors are admitted by the call's
declaration (bai.common.agent_calls) as over HTTP, so both modes raise the same."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

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
        with _admitted(call):
            return await self._handlers.call(call)(request)

    async def send_upload(self, call: Upload[Req], request: Req, chunks: AsyncIterator[bytes]) -> None:
        with _admitted(call):
            await self._handlers.upload(call)(request, chunks)

    async def send_download(self, call: Download[Req], request: Req) -> ByteStream:
        with _admitted(call):
            return await self._handlers.download(call)(request)

    async def open_websocket(self, call: WebSocketCall[Req], request: Req) -> Terminal:
        with _admitted(call):
            return await self._handlers.websocket(call)(request)


@contextlib.contextmanager
def _admitted(call: AgentCall[BaseModel]) -> Iterator[None]:
    """Raise what the block raises as ``call`` admits it."""
    try:
        yield
    except BaiError as exc:
        error = call.admit(exc)
        if error is exc:
            raise
        raise error from exc
