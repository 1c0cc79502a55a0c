"""The agent's end of a session's terminals (the runner's end is bai.runner.terminal).

A ``SessionTerminal`` queues the ``PtyOutput`` of its pty until ``read`` takes it, and
acknowledges each chunk to the runner as it is taken: the runner sends no more than
its window ahead of the acknowledgements, so the queue is bounded by that window. A
runner that ignores the window (the sandbox is hostile) has its excess dropped at
``QUEUE_LIMIT``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections import deque
from collections.abc import Callable

from bai.common.errors import ExecutionFailed, InvalidRequest
from bai.common.terminal import MAX_COLS, MAX_ROWS, Terminal
from bai.runner import protocol as p

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1024 * 1024  # bytes queued for one terminal, at most (4 runner windows)

Send = Callable[[p.Message], None]


def check_size(rows: int, cols: int) -> None:
    if not 0 < rows <= MAX_ROWS:
        raise InvalidRequest(f"rows: must be between 1 and {MAX_ROWS}", field="rows")
    if not 0 < cols <= MAX_COLS:
        raise InvalidRequest(f"cols: must be between 1 and {MAX_COLS}", field="cols")


class SessionTerminal(Terminal):
    def __init__(self, pty_id: str, send: Send, on_close: Callable[[str], None]) -> None:
        self.pty_id = pty_id
        self._send = send
        self._on_close = on_close
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self.dropped = 0
        self._wake = asyncio.Event()
        self.closed = False

    # -- from the runner (Session.dispatch) --------------------------------------

    def on_output(self, message: p.PtyOutput) -> None:
        try:
            data = base64.b64decode(message.data, validate=True)
        except (binascii.Error, ValueError):
            log.warning("terminal %s: output that is not base64", self.pty_id)
            return
        if self._queued + len(data) > QUEUE_LIMIT:
            self.dropped += len(data)
            self._ack(len(data))
            return
        self._chunks.append(data)
        self._queued += len(data)
        self._wake.set()

    def on_closed(self, exit_code: int, message: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self.exit_code = exit_code
        self.message = message
        self._wake.set()
        self._on_close(self.pty_id)

    # -- Terminal ----------------------------------------------------------------

    async def read(self) -> bytes | None:
        while not self._chunks:
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._queued = 0
        self._ack(len(data))
        return data

    async def write(self, data: bytes) -> None:
        if not self.closed and data:
            self._runner(p.PtyInput(pty_id=self.pty_id, data=base64.b64encode(data).decode("ascii")))

    async def resize(self, rows: int, cols: int) -> None:
        check_size(rows, cols)
        if not self.closed:
            self._runner(p.PtyResize(pty_id=self.pty_id, rows=rows, cols=cols))

    async def close(self) -> None:
        if not self.closed:
            self._runner(p.PtyClose(pty_id=self.pty_id))
            self.on_closed(128 + 1, "hung up")

    def _ack(self, size: int) -> None:
        if not self.closed:
            self._runner(p.PtyAck(pty_id=self.pty_id, size=size))

    def _runner(self, message: p.Message) -> None:
        try:
            self._send(message)
        except ExecutionFailed:
            self.on_closed(-1, "the session's runner is gone")
