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

import base64
import binascii
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


class TerminalStream(AsyncAPI):
    """An interactive shell in a session over the terminal WebSocket (API.md section 6);
    made by AsyncComputeSession.terminal::

        async with sess.terminal(rows=24, cols=80) as term:
            await term.send(b"ls\\n")
            while (data := await term.read()) is not None:
                ...                              # bytes, escape sequences and all
        term.exit_code                           # the shell's, once read() returned None

    Leaving the ``async with`` closes the socket, which hangs the shell up.
    """

    def __init__(self, api: AsyncSession, path: str) -> None:
        self._api = api
        self._path = path
        self._socket: ClientConnection | None = None
        #: the shell's exit code, once ``read`` has returned None (None: the connection ended first)
        self.exit_code: int | None = None

    async def __aenter__(self) -> Self:
        self._socket = await self._api.open_websocket(self._path)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def read(self) -> bytes | None:
        """The shell's next output; None once it has exited. Raises ExecutionFailed on an
        error the server reports, ConnectionFailed when the connection is lost."""
        while True:
            frame = await self._next_frame()
            if frame is None:
                return None
            kind = frame.get("type")
            if kind == "out":
                return _base64(frame.get("data"))
            if kind == "exit":
                code = frame.get("exitCode")
                self.exit_code = code if isinstance(code, int) else None
                return None
            if kind == "error":
                raise ExecutionFailed(str(frame.get("msg") or "the terminal failed"))

    async def send(self, data: bytes) -> None:
        """Type ``data`` into the terminal (``b"\\x03"`` is Ctrl-C)."""
        await self._send({"type": "stdin", "chars": base64.b64encode(data).decode("ascii")})

    async def resize(self, rows: int, cols: int) -> None:
        await self._send({"type": "resize", "rows": rows, "cols": cols})

    async def restart(self) -> None:
        """Kill the shell and start a new one on the same connection."""
        await self._send({"type": "restart"})

    async def close(self) -> None:
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close()

    async def _next_frame(self) -> dict[str, Any] | None:
        socket = self._connected()
        try:
            message = await socket.recv()
        except ConnectionClosedOK:
            return None
        except ConnectionClosedError as exc:
            raise ConnectionFailed(f"lost the terminal to {self._api.config.endpoint}: {exc}") from exc
        try:
            frame = json.loads(message)
        except ValueError as exc:
            raise ProtocolError(f"unexpected frame on the terminal: {exc}") from exc
        if not isinstance(frame, dict):
            raise ProtocolError("unexpected frame on the terminal: not a JSON object")
        return frame

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            await self._connected().send(json.dumps(frame))
        except WebSocketException as exc:
            raise ConnectionFailed(f"lost the terminal to {self._api.config.endpoint}: {exc}") from exc

    def _connected(self) -> ClientConnection:
        if self._socket is None:
            raise RuntimeError("use the terminal inside 'async with' (it is not open)")
        return self._socket


def _base64(value: Any) -> bytes:
    try:
        return base64.b64decode(value if isinstance(value, str) else "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"terminal output that is not base64: {exc}") from exc
