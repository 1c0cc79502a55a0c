"""The agent ↔ runner protocol: typed frames over one stream socket.

A frame is a 4-byte big-endian length followed by that many bytes of a UTF-8
JSON object whose ``type`` names a message class below. Every message is a
dataclass; ``decode`` dispatches on the type through ``MESSAGE_TYPES``, never on
a chain of string comparisons. Both ends import this module: the runner inside
the sandbox (Python >= 3.9, standard library only) and the agent.

Flow of one run:  agent ``Execute`` → runner ``Output``* [``WaitingInput`` ←
agent ``Input``]* → runner ``Finished``. ``Interrupt`` may arrive at any time.
A pooled sandbox gets ``Configure`` → ``Configured`` once, before its first run.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Dict, List, Optional, Type, Union

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
PROTOCOL_VERSION = 1


class ProtocolError(Exception):
    """A frame that is not a message of this protocol."""


@dataclass
class Message:
    TYPE: ClassVar[str] = ""


# -- agent → runner ---------------------------------------------------------


@dataclass
class Execute(Message):
    """Run ``code`` in the session's engine. ``mode`` is ``query`` for issue-2 engines."""

    TYPE: ClassVar[str] = "execute"
    run_id: str
    code: str
    mode: str = "query"


@dataclass
class Input(Message):
    """The text a program waiting in ``input()`` asked for (without the newline)."""

    TYPE: ClassVar[str] = "input"
    run_id: str
    text: str


@dataclass
class Interrupt(Message):
    """Interrupt the current run (SIGINT to the user's code), if any."""

    TYPE: ClassVar[str] = "interrupt"


@dataclass
class Complete(Message):
    TYPE: ClassVar[str] = "complete"
    code: str
    line: str = ""
    row: int = 0
    col: int = 0


@dataclass
class Configure(Message):
    """Claim a pooled sandbox for a session: set these environment variables in the
    runner and the REPL before the first ``Execute``. Answered by ``Configured``."""

    TYPE: ClassVar[str] = "configure"
    environ: Dict[str, str] = field(default_factory=dict)


@dataclass
class Shutdown(Message):
    TYPE: ClassVar[str] = "shutdown"


# -- runner → agent ---------------------------------------------------------


@dataclass
class Ready(Message):
    """Sent once, when the engine can take its first ``Execute``."""

    TYPE: ClassVar[str] = "ready"
    engine: str
    language_version: str
    protocol: int = PROTOCOL_VERSION


@dataclass
class Output(Message):
    TYPE: ClassVar[str] = "output"
    run_id: str
    stream: str  # "stdout" | "stderr"
    data: str


@dataclass
class Media(Message):
    TYPE: ClassVar[str] = "media"
    run_id: str
    mime: str
    data: str  # text formats raw, binary as a data: URI


@dataclass
class WaitingInput(Message):
    TYPE: ClassVar[str] = "waiting-input"
    run_id: str
    prompt: str = ""
    password: bool = False


@dataclass
class Finished(Message):
    """A run ended. ``engine_restarted`` says the REPL died and was started afresh (state lost)."""

    TYPE: ClassVar[str] = "finished"
    run_id: str
    exit_code: int
    wall_ms: float = 0.0
    engine_restarted: bool = False


@dataclass
class Completions(Message):
    TYPE: ClassVar[str] = "completions"
    items: List[str] = field(default_factory=list)


@dataclass
class Configured(Message):
    """``Configure`` is done: the next ``Execute`` sees the new environment."""

    TYPE: ClassVar[str] = "configured"


@dataclass
class Failure(Message):
    """The runner could not do what a message asked (bad frame, busy engine...)."""

    TYPE: ClassVar[str] = "failure"
    message: str
    run_id: Optional[str] = None


AnyMessage = Union[
    Execute, Input, Interrupt, Complete, Configure, Shutdown,
    Ready, Output, Media, WaitingInput, Finished, Completions, Configured, Failure,
]

MESSAGE_TYPES: Dict[str, Type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Execute, Input, Interrupt, Complete, Configure, Shutdown,
        Ready, Output, Media, WaitingInput, Finished, Completions, Configured, Failure,
    )
}


def encode(message: Message) -> bytes:
    body = dict(asdict(message))
    body["type"] = message.TYPE
    # "replace": a lone surrogate (from undecodable input) becomes "?" rather than an error
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> Message:
    """Decode one frame's payload (without its length header)."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("frame is not UTF-8 JSON: %s" % exc) from None
    if not isinstance(body, dict):
        raise ProtocolError("frame is not a JSON object")
    cls = MESSAGE_TYPES.get(body.pop("type", None))
    if cls is None:
        raise ProtocolError("unknown message type")
    names = {f.name for f in fields(cls)}
    unknown = set(body) - names
    if unknown:
        raise ProtocolError("unknown fields for %s: %s" % (cls.TYPE, sorted(unknown)))
    try:
        message: Message = cls(**body)
    except TypeError as exc:
        raise ProtocolError("bad fields for %s: %s" % (cls.TYPE, exc)) from None
    return message


class FrameBuffer:
    """Splits a byte stream into frames; feed it what ``recv`` returns."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[Message]:
        self._buf += data
        out: List[Message] = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > MAX_FRAME:
                raise ProtocolError("frame of %d bytes is over the limit" % size)
            end = HEADER.size + size
            if len(self._buf) < end:
                break
            payload = bytes(self._buf[HEADER.size:end])
            del self._buf[:end]  # a frame that fails to decode is dropped, not retried forever
            out.append(decode(payload))
        return out


def describe(message: Any) -> str:
    return "%s(%s)" % (getattr(message, "TYPE", "?"), getattr(message, "run_id", ""))
