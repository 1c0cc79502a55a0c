"""The runner's end of the agent socket: frames in, messages out.

Reads are driven by the loop; each frame is decoded on its own, so a malformed one
is answered with a ``Failure`` and the stream goes on. Sends block (the agent reads
continuously; a slow agent slows the user's output, which is the back-pressure we
want). A closed socket, on read or on send, calls ``on_closed`` once.
"""

from __future__ import annotations

import os

from bai.runner.frames import RECV_SIZE, FrameSplitter
from bai.runner.protocol import Failure, Message, ProtocolError, decode, encode

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    from _socket import socket
    from typing import Callable

    from bai.runner.loop import Loop


class AgentConnection:
    """The runner's one connection to its agent (the agent's end is
    bai.agent.session.RunnerConnection). Made by Runner; ``reattach`` swaps in a
    restarted agent's socket."""

    def __init__(
        self,
        sock: socket,
        loop: Loop,
        on_message: Callable[[Message], None],
        on_closed: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._loop = loop
        self._on_message = on_message
        self._on_closed = on_closed
        self._splitter = FrameSplitter()
        self.closed = False
        sock.setblocking(True)
        loop.add_reader(sock.fileno(), self._on_readable)

    def send(self, message: Message) -> None:
        if self.closed:
            return
        try:
            frame = encode(message)
        except UnicodeEncodeError:  # a lone surrogate, from the user's code (an input() prompt...)
            frame = encode(_encodable(message))
        try:
            self._sock.sendall(frame)
        except OSError:
            self._close()

    def reattach(self, sock: socket) -> None:
        """Serve a new connection (a restarted agent's) in place of the closed one."""
        old, self._sock = self._sock, sock
        if old.fileno() >= 0:
            old.close()
        self._splitter = FrameSplitter()
        self.closed = False
        sock.setblocking(True)
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def forget_in_child(self) -> None:
        """In a forked child: close the socket's fd so the user's code never holds it."""
        os.close(self._sock.fileno())

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(RECV_SIZE)
        except OSError:
            data = b""
        if not data:
            self._close()
            return
        payloads, error = self._splitter.feed(data)
        for payload in payloads:
            try:
                message = decode(payload)
            except ProtocolError as exc:
                self.send(Failure(message="malformed frame: %s" % exc))
                continue
            self._on_message(message)
            if self.closed:
                return
        if error is not None:
            self.send(Failure(message="malformed stream: %s; the buffered bytes were dropped" % error))

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._on_closed()


def _encodable(message: Message) -> Message:
    """The message with what UTF-8 cannot encode in its strings replaced by '?'."""

    def scrub(value: object) -> object:
        if isinstance(value, str):
            return value.encode("utf-8", "replace").decode("utf-8")
        if isinstance(value, list):
            return [scrub(item) for item in value]
        return value

    changes = {name: scrub(value) for name, value in message.as_dict().items()}
    return type(message)(**changes)
