"""A terminal on a remote agent: the manager's end of the agent RPC's terminal
WebSocket (bai.agent.rpc_terminal describes the frames).

Output is read from the socket only when ``read`` is called, and the websockets
client buffers a bounded number of frames: a slow client of the manager slows the
agent's sends, then the shell (the runner's window), and nothing grows here.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from bai.common import errors
from bai.common.terminal import Terminal

MAX_FRAME = 4 * 1024 * 1024  # the agent's frames are at most its terminal window (1 MiB)
MAX_QUEUE = 8  # frames the client buffers before it stops reading the socket

Refusal = Callable[[int, bytes], errors.BaiError]


async def open_remote_terminal(url: str, headers: dict[str, str], refusal: Refusal) -> RemoteTerminal:
    """Open the agent's terminal at ``url`` (the call and its request in the query string,
    made by bai.manager.agent_http); a refused upgrade raises ``refusal(status, body)``."""
    try:
        socket = await connect(
            url, additional_headers=headers, max_size=MAX_FRAME, max_queue=MAX_QUEUE, open_timeout=10
        )
    except InvalidStatus as exc:
        raise refusal(exc.response.status_code, bytes(exc.response.body or b"")) from exc
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise errors.ServiceUnavailable(f"the agent at {url.split('?', 1)[0]} is unreachable: {exc}") from exc
    return RemoteTerminal(socket)


class RemoteTerminal(Terminal):
    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ended = False

    async def read(self) -> bytes | None:
        while not self._ended:
            try:
                frame = await self._socket.recv()
            except ConnectionClosed:
                self._end(-1, "the connection to the agent was lost")
                return None
            if isinstance(frame, bytes):
                return frame
            self._on_exit(frame)
        return None

    def _on_exit(self, text: str) -> None:
        try:
            data = json.loads(text)
            code, message = data.get("exitCode"), data.get("message")
        except (ValueError, AttributeError):
            code, message = -1, "the agent sent a bad frame"
        self._end(code if isinstance(code, int) else -1, message if isinstance(message, str) else "")

    def _end(self, code: int, message: str) -> None:
        if not self._ended:
            self._ended = True
            self.exit_code = code
            self.message = message

    async def write(self, data: bytes) -> None:
        if data and not self._ended:
            try:
                await self._socket.send(data)
            except ConnectionClosed:
                self._end(-1, "the connection to the agent was lost")

    async def resize(self, rows: int, cols: int) -> None:
        if not self._ended:
            try:
                await self._socket.send(json.dumps({"rows": rows, "cols": cols}))
            except ConnectionClosed:
                self._end(-1, "the connection to the agent was lost")

    async def close(self) -> None:
        await self._socket.close()
