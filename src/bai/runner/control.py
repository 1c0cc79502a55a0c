"""Messages between the runner and its REPL child (never seen by the agent).

Two socketpairs connect them, so that no reader ever takes a reply meant for another:

* the **command** channel, read by the child only while it is idle:
  runner → child ``RunCode`` / ``CompleteCode`` / ``SetEnviron``; child → runner ``RunDone`` / ``CompleteDone``.
* the **request** channel, used by whichever thread of the user's code writes output or
  reads input: child → runner ``Fence`` / ``AskInput``; runner → child ``FenceDone`` /
  ``InputGiven``, each carrying the ``seq`` of the request it answers.

Beside them, the **interrupt pipe** (runner → child): before each SIGINT the runner
writes the number of the run it interrupts (the count of RunCode commands it sent the
child), ``RUN_NUMBER_BYTES`` bytes little-endian; the child reads it as a run starts
(ReplChild.interrupt, Repl._interrupt_came_early).

Frames are those of protocol.py (length + JSON with a ``type``), in ASCII JSON so that
any str the user's code makes (lone surrogates included) travels. The child runs the
user's code, so the runner treats a control frame that does not decode as a broken
REPL, never as its own failure.
"""

from __future__ import annotations

import json
from collections import deque

from bai.runner.frames import RECV_SIZE, FrameSplitter
from bai.runner.protocol import HEADER, Message, ProtocolError, field

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    from _socket import socket
    from typing import ClassVar, Deque, Dict, List, Optional, Type


RUN_NUMBER_BYTES = 8


class RunCode(Message):
    """Run ``code``; ``script``: as a file, no final expression's value displayed."""

    TYPE: ClassVar[str] = "run"
    code: str
    script: bool = False


class RunDone(Message):
    TYPE: ClassVar[str] = "run-done"
    exit_code: int


class CompleteCode(Message):
    TYPE: ClassVar[str] = "complete"
    text: str


class CompleteDone(Message):
    TYPE: ClassVar[str] = "complete-done"
    items: List[str] = field(default_factory=list)


class SetEnviron(Message):
    """Update the REPL's os.environ (a pooled sandbox claimed by a session); no answer:
    the command channel is ordered, so the next ``RunCode`` sees it."""

    TYPE: ClassVar[str] = "set-environ"
    environ: Dict[str, str] = field(default_factory=dict)


class Fence(Message):
    """Read both output pipes empty, then answer: what was written before is forwarded."""

    TYPE: ClassVar[str] = "fence"
    seq: int


class FenceDone(Message):
    TYPE: ClassVar[str] = "fence-done"
    seq: int


class AskInput(Message):
    TYPE: ClassVar[str] = "ask-input"
    seq: int
    prompt: str = ""
    password: bool = False


class InputGiven(Message):
    """The line the user typed; ``eof`` when there is nobody to ask (no run is active)."""

    TYPE: ClassVar[str] = "input-given"
    seq: int
    text: str = ""
    eof: bool = False


_CONTROL = (RunCode, RunDone, CompleteCode, CompleteDone, SetEnviron, Fence, FenceDone, AskInput, InputGiven)
CONTROL_TYPES: Dict[str, Type[Message]] = {cls.TYPE: cls for cls in _CONTROL}


def encode_control(message: Message) -> bytes:
    body = message.as_dict()
    body["type"] = message.TYPE
    payload = json.dumps(body, separators=(",", ":")).encode("ascii")
    return HEADER.pack(len(payload)) + payload


def decode_control(payload: bytes) -> Message:
    try:
        body = json.loads(payload.decode("utf-8"))
        cls = CONTROL_TYPES[body.pop("type")]
        message: Message = cls(**body)
    except (UnicodeDecodeError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise ProtocolError("bad control frame: %r" % (exc,)) from None
    return message


class Channel:
    """One end of a control socketpair, read blocking: the REPL child's side.

    The partial frame lives in the object, so a KeyboardInterrupt raised while
    ``recv`` waits loses nothing of the stream.
    """

    def __init__(self, sock: socket) -> None:
        self.sock = sock
        self._splitter = FrameSplitter()
        self._ready: Deque[bytes] = deque()

    def send(self, message: Message) -> None:
        self.sock.sendall(encode_control(message))

    def recv(self) -> Optional[Message]:
        """The next message, or None once the runner has gone."""
        while not self._ready:
            data = self.sock.recv(RECV_SIZE)
            if not data:
                return None
            payloads, error = self._splitter.feed(data)
            if error is not None:
                raise ProtocolError(error)
            self._ready.extend(payloads)
        return decode_control(self._ready.popleft())
