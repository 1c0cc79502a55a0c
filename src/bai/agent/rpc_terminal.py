"""The agent RPC's terminal: a session's terminal over one WebSocket, for a manager in
another process (bai.manager.agent_terminal is the other end).

``GET /rpc/open_terminal?session_id=&rows=&cols=`` (the call ``open_terminal`` of
bai.common.agent_calls, its route made by bai.agent.rpc, which checks the cluster
secret) upgraded to a WebSocket; refused before the upgrade with the ``RpcError`` of the
failure (400 naming rows / cols, 404...). Then:

* manager → agent: a binary frame is typed into the terminal; a text frame
  ``{"rows", "cols"}`` resizes it; closing the socket hangs the terminal up;
* agent → manager: a binary frame is the shell's output; when the shell exits, a
  text frame ``{"exitCode", "message"}`` and the socket closes.

Each output frame is sent before the next is read from the terminal, so a slow
manager slows the shell (bai.agent.terminals), and nothing queues here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bai.common.errors import BaiError
from bai.common.terminal import Terminal


async def serve_terminal(
    ws: WebSocket, opening: Awaitable[Terminal], error_response: Callable[[BaiError], Response]
) -> None:
    """Serve the terminal ``opening`` gives; ``error_response`` makes the refusal of an
    upgrade whose terminal could not be opened."""
    try:
        terminal = await opening
    except BaiError as exc:
        await ws.send_denial_response(error_response(exc))
        return
    try:
        await ws.accept()
    except (WebSocketDisconnect, RuntimeError, OSError):  # the client went away meanwhile
        await terminal.close()
        return
    pump = asyncio.get_running_loop().create_task(_forward(ws, terminal))
    try:
        while True:
            await _on_frame(terminal, await ws.receive())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await pump
        await terminal.close()


async def _on_frame(terminal: Terminal, message: Mapping[str, Any]) -> None:
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("bytes") is not None:
        await terminal.write(message["bytes"])
    elif message.get("text") is not None:
        with contextlib.suppress(ValueError, TypeError, KeyError, BaiError):
            size = json.loads(message["text"])
            await terminal.resize(int(size["rows"]), int(size["cols"]))


async def _forward(ws: WebSocket, terminal: Terminal) -> None:
    while (data := await terminal.read()) is not None:
        await ws.send_bytes(data)
    await ws.send_text(json.dumps({"exitCode": terminal.exit_code, "message": terminal.message}))
    if ws.client_state == WebSocketState.CONNECTED:
        await ws.close()
