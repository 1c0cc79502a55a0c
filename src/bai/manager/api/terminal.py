"""The terminal WebSocket (API.md section 6): a shell on a pty in the session's sandbox.

``GET /stream/session/{id}/pty`` (v4: ``/stream/kernel/{id}/pty``), optional query
``rows`` and ``cols`` (24 x 80). Client frames, JSON text: ``{"type": "stdin",
"chars": <base64>}``, ``{"type": "resize", "rows", "cols"}``, ``{"type": "ping"}``,
``{"type": "restart"}`` (the shell is killed and a new one started). Server frames:
``{"type": "out", "data": <base64>}``; a frame the server cannot take is answered
``{"type": "error", "msg"}`` and the terminal goes on; when the shell exits,
``{"type": "exit", "exitCode"}`` and the socket closes. Closing the socket hangs
the terminal up. An open terminal keeps its session from idling out.

Output is pulled from the agent one chunk at a time and each send to the client is
awaited: a slow client slows the shell (the runner stops reading its pty), it never
grows a buffer here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bai.common.errors import BaiError, InvalidRequest
from bai.common.terminal import MAX_COLS, MAX_ROWS, Terminal
from bai.manager.agent_client import AgentClient
from bai.manager.api.deps import live_session, manager_of
from bai.manager.api.stream import _deny
from bai.manager.sessions import LiveSession

DEFAULT_ROWS, DEFAULT_COLS = 24, 80


def _dimension(value: Any, name: str, limit: int) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise InvalidRequest(f"{name}: must be an integer between 1 and {limit}", field=name)
    return value


def _size(data: Any, default: tuple[int, int] | None = None) -> tuple[int, int]:
    rows = data.get("rows", default[0] if default else None)
    cols = data.get("cols", default[1] if default else None)
    return _dimension(rows, "rows", MAX_ROWS), _dimension(cols, "cols", MAX_COLS)


async def stream_pty(ws: WebSocket) -> None:
    manager = manager_of(ws)
    try:
        session = await live_session(ws)
        rows, cols = _size(ws.query_params, (DEFAULT_ROWS, DEFAULT_COLS))
        agent = manager.sessions.agent_of(session)
        terminal = await agent.open_terminal(session.id, rows, cols)
    except BaiError as exc:
        await _deny(ws, exc)
        return
    try:
        await ws.accept()
    except (WebSocketDisconnect, RuntimeError, OSError):  # the client went away meanwhile
        await terminal.close()
        return
    relay = _Relay(ws, agent, session, terminal, (rows, cols))
    with manager.sessions.in_use(session):  # an open terminal keeps its session from idling out
        await relay.serve()


class _Relay:
    """One WebSocket's terminal: the client's frames in, the shell's output out."""

    def __init__(
        self, ws: WebSocket, agent: AgentClient, session: LiveSession, terminal: Terminal, size: tuple[int, int]
    ) -> None:
        self.ws = ws
        self.agent = agent
        self.session = session
        self.terminal = terminal
        self.size = size
        self._pump: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        self._start_pump()
        try:
            while True:
                await self._on_frame(await self.ws.receive_text())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                    await self._pump
            await self.terminal.close()
            await self._close_socket()

    def _start_pump(self) -> None:
        self._pump = asyncio.get_running_loop().create_task(self._forward(self.terminal))

    async def _forward(self, terminal: Terminal) -> None:
        """The shell's output to the client; at its end, its exit code, and the socket closes."""
        while (data := await terminal.read()) is not None:
            await self.ws.send_text(json.dumps({"type": "out", "data": base64.b64encode(data).decode("ascii")}))
        if terminal.message and terminal.exit_code == -1:
            await self._send_error(terminal.message)
        await self.ws.send_text(json.dumps({"type": "exit", "exitCode": terminal.exit_code}))
        await self._close_socket()

    async def _close_socket(self) -> None:
        if self.ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.ws.close()

    async def _send_error(self, message: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.ws.send_text(json.dumps({"type": "error", "msg": message}))

    async def _on_frame(self, text: str) -> None:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise InvalidRequest("a frame must be a JSON object with a type", field="type")
            await self._handle(data)
        except ValueError:
            await self._send_error("a frame must be JSON text")
        except BaiError as exc:
            await self._send_error(exc.message)

    async def _handle(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "stdin":
            await self.terminal.write(_chars(data.get("chars")))
        elif kind == "resize":
            self.size = _size(data)
            await self.terminal.resize(*self.size)
        elif kind == "restart":
            await self._restart()
        elif kind != "ping":
            raise InvalidRequest("type: must be stdin, resize, ping or restart", field="type")

    async def _restart(self) -> None:
        """Kill the shell and start a new one on the same socket."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await self.terminal.close()
        self.terminal = await self.agent.open_terminal(self.session.id, *self.size)
        self._start_pump()


def _chars(value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest("chars: must be a base64 string", field="chars")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("chars: must be a base64 string", field="chars") from None
