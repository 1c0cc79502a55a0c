"""One run over the streaming execute WebSocket (API.md section 6).

    async with sess.stream_execute("name = input('who? ')") as stream:
        async for frame in stream:
            ...                                   # frame.console: [[type, data], ...]
            if frame.status == "waiting-input":
                await stream.send_input("world")

The iteration ends after the ``finished`` (or ``exec-timeout``) frame. An
``error`` frame raises ExecutionFailed; a connection lost mid-run raises
ConnectionFailed; the server closing before the end raises ProtocolError.
Leaving the ``async with`` early closes the socket, which interrupts the run.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, WebSocketException

from bai.client.base import AsyncAPI
from bai.client.errors import ConnectionFailed, ProtocolError
from bai.client.models import StreamFrame
from bai.common.errors import ExecutionFailed

if TYPE_CHECKING:
    from bai.client.session import AsyncSession

FINAL_STATUSES = frozenset({"finished", "exec-timeout"})


class ExecutionStream(AsyncAPI):
    """The frames of one streamed run; made by AsyncComputeSession.stream_execute."""

    def __init__(self, api: AsyncSession, path: str, code: str, mode: str, options: dict[str, Any]) -> None:
        self._api = api
        self._path = path
        self._first_frame = json.dumps({"code": code, "mode": mode, "options": options})
        self._socket: ClientConnection | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    async def __aenter__(self) -> Self:
        self._socket = await self._api.open_websocket(self._path)
        try:
            await self._socket.send(self._first_frame)
        except WebSocketException as exc:
            await self.close()
            raise ConnectionFailed(f"the execute stream closed before the code was sent: {exc}") from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamFrame:
        if self._finished:
            raise StopAsyncIteration
        socket = self._connected()
        try:
            message = await socket.recv()
        except ConnectionClosedOK as exc:
            raise ProtocolError("the server closed the execute stream before the run finished") from exc
        except ConnectionClosedError as exc:
            raise ConnectionFailed(f"lost the execute stream to {self._api.config.endpoint}: {exc}") from exc
        try:
            frame = StreamFrame.model_validate_json(message)
        except ValidationError as exc:
            raise ProtocolError(f"unexpected frame on the execute stream: {exc}") from exc
        if frame.status == "error":
            self._finished = True
            raise ExecutionFailed(frame.msg or "the run failed")
        if frame.status in FINAL_STATUSES:
            self._finished = True
        return frame

    async def send_input(self, text: str) -> None:
        """Answer a ``waiting-input`` frame with one line (without its newline)."""
        try:
            await self._connected().send(text)
        except WebSocketException as exc:
            raise ConnectionFailed(f"lost the execute stream to {self._api.config.endpoint}: {exc}") from exc

    async def close(self) -> None:
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close()

    def _connected(self) -> ClientConnection:
        if self._socket is None:
            raise RuntimeError("use the stream inside 'async with' (it is not open)")
        return self._socket
