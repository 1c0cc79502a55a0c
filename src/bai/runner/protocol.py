"""The agent ↔ runner protocol: typed frames over one stream socket.

A frame is a 4-byte big-endian length followed by that many bytes of a UTF-8
JSON object whose ``type`` names a message class below. Every message is a
``Record`` (a plain class with slots, declared like a dataclass); ``decode``
dispatches on the type through ``MESSAGE_TYPES``, never on a chain of string
comparisons. Both ends import this module: the runner inside
the sandbox (Python >= 3.9, standard library only) and the agent.

Flow of one run:  agent ``Execute`` → runner ``Output``* [``WaitingInput`` ←
agent ``Input``]* → runner ``Finished``. ``Interrupt`` may arrive at any time.
A pooled sandbox gets ``Configure`` → ``Configured`` once, before its first run.

Terminals, at any time and beside the runs (bai.runner.terminal): agent ``PtyOpen``
→ runner ``PtyOutput``* (each acknowledged by a ``PtyAck``) → ``PtyClosed``;
``PtyInput``, ``PtyResize`` and ``PtyClose`` may come in between.
"""

from __future__ import annotations

import json
import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple, Type, TypeVar, Union

    from typing_extensions import dataclass_transform

    _T = TypeVar("_T")
else:

    def dataclass_transform(**_options):  # mypy's view of _RecordType only: nothing at run time
        return lambda cls: cls


HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
PROTOCOL_VERSION = 1


class ProtocolError(Exception):
    """A frame that is not a message of this protocol."""


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], object]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], _T]) -> _T:
    """A field whose default is made afresh for each record (a list, a dict)."""
    return _Factory(default_factory)  # type: ignore[return-value]


def _is_class_var(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


@dataclass_transform(field_specifiers=(field,))
class _RecordType(type):
    """Makes a class body of annotated fields a record, as ``@dataclass`` would, at a
    fraction of its cost: the fields (annotations not ``ClassVar``) become
    ``__slots__``, their class-level values the defaults. Annotations are read as the
    strings ``from __future__ import annotations`` leaves them, never evaluated."""

    def __new__(mcs, name: str, bases: Tuple[type, ...], namespace: Dict[str, Any]) -> _RecordType:
        fields: List[str] = []
        defaults: Dict[str, Any] = {}
        for base in bases:
            fields.extend(getattr(base, "_FIELDS", ()))
            defaults.update(getattr(base, "_DEFAULTS", {}))
        annotations = namespace.get("__annotations__", {})
        own = [key for key, kind in annotations.items() if not _is_class_var(kind)]
        for key in own:
            if key in namespace:
                defaults[key] = namespace.pop(key)
            elif defaults:
                raise TypeError("%s: field %r without a default follows one with a default" % (name, key))
        namespace["__slots__"] = tuple(own)
        namespace["_FIELDS"] = tuple(fields + own)
        namespace["_DEFAULTS"] = defaults
        return super().__new__(mcs, name, bases, namespace)


class Record(metaclass=_RecordType):
    """Base of the runner's plain records: positional or keyword ``__init__`` in field
    order, ``==`` field by field within one class, a dataclass-like ``repr``."""

    _FIELDS: ClassVar[Tuple[str, ...]] = ()
    _DEFAULTS: ClassVar[Dict[str, Any]] = {}
    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value: as a dataclass

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self._FIELDS
        if len(args) > len(names):
            raise TypeError("%s() takes %d arguments but %d were given" % (type(self).__name__, len(names), len(args)))
        for index, value in enumerate(args):
            name = names[index]
            if name in kwargs:
                raise TypeError("%s() got multiple values for argument %r" % (type(self).__name__, name))
            setattr(self, name, value)
        missing = []
        for name in names[len(args) :]:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in self._DEFAULTS:
                value = self._DEFAULTS[name]
                if type(value) is _Factory:
                    value = value.make()
            else:
                missing.append(name)
                continue
            setattr(self, name, value)
        if missing:
            raise TypeError("%s() missing required argument(s): %s" % (type(self).__name__, ", ".join(missing)))
        if kwargs:
            raise TypeError("%s() got unexpected argument(s): %s" % (type(self).__name__, ", ".join(kwargs)))

    def as_dict(self) -> Dict[str, Any]:
        """The fields and their values, in order (a shallow ``dataclasses.asdict``)."""
        return {name: getattr(self, name) for name in self._FIELDS}

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        names = self._FIELDS
        return tuple(getattr(self, name) for name in names) == tuple(getattr(other, name) for name in names)

    def __repr__(self) -> str:
        values = ", ".join("%s=%r" % (name, getattr(self, name)) for name in self._FIELDS)
        return "%s(%s)" % (type(self).__qualname__, values)


class Message(Record):
    TYPE: ClassVar[str] = ""


# -- agent → runner ---------------------------------------------------------


class Execute(Message):
    """Run ``code`` in the session's engine (``mode`` "query"), or a batch ("batch").

    The runner cannot read the environment catalog: the agent renders the commands.
    ``steps`` is a list of ``[name, shell command]`` run in order under /bin/sh in the
    working dir. Query mode of the command engine: the code is first written to
    ``source`` (a file name in the working dir), then the steps ("compile", "run") run;
    a failing step ends the run with its exit code. Batch mode (any engine): steps
    "clean", "build", "exec"; each of clean and build ends with a ``StepFinished``; a
    failing build ends the run; the build's output is dropped unless ``build_log`` is
    set or the build fails."""

    TYPE: ClassVar[str] = "execute"
    run_id: str
    code: str
    mode: str = "query"
    source: str = ""
    steps: List[List[str]] = field(default_factory=list)
    build_log: bool = False


class Input(Message):
    """The text a program waiting in ``input()`` asked for (without the newline)."""

    TYPE: ClassVar[str] = "input"
    run_id: str
    text: str


class Interrupt(Message):
    """Interrupt the current run (SIGINT to the user's code), if any."""

    TYPE: ClassVar[str] = "interrupt"


class Complete(Message):
    TYPE: ClassVar[str] = "complete"
    code: str
    line: str = ""
    row: int = 0
    col: int = 0


class Configure(Message):
    """Claim a pooled sandbox for a session: set these environment variables in the
    runner and the REPL before the first ``Execute``. Answered by ``Configured``."""

    TYPE: ClassVar[str] = "configure"
    environ: Dict[str, str] = field(default_factory=dict)


class Shutdown(Message):
    TYPE: ClassVar[str] = "shutdown"


class PtyOpen(Message):
    """Start an interactive shell on a new pseudo-terminal of ``rows`` x ``cols``.
    Answered by ``PtyOutput``* and, when the shell ends, ``PtyClosed``."""

    TYPE: ClassVar[str] = "pty-open"
    pty_id: str
    rows: int = 24
    cols: int = 80


class PtyInput(Message):
    """Bytes typed into a terminal, base64 in ``data``."""

    TYPE: ClassVar[str] = "pty-input"
    pty_id: str
    data: str


class PtyResize(Message):
    TYPE: ClassVar[str] = "pty-resize"
    pty_id: str
    rows: int
    cols: int


class PtyAck(Message):
    """The agent has passed on ``size`` bytes of the terminal's output: the runner
    reads no more than a window of bytes ahead of these acknowledgements."""

    TYPE: ClassVar[str] = "pty-ack"
    pty_id: str
    size: int


class PtyClose(Message):
    """Hang the terminal up (SIGHUP to its shell's process group, SIGKILL later)."""

    TYPE: ClassVar[str] = "pty-close"
    pty_id: str


# -- runner → agent ---------------------------------------------------------


class Ready(Message):
    """Sent once, when the engine can take its first ``Execute``."""

    TYPE: ClassVar[str] = "ready"
    engine: str
    language_version: str
    protocol: int = PROTOCOL_VERSION


class Output(Message):
    TYPE: ClassVar[str] = "output"
    run_id: str
    stream: str  # "stdout" | "stderr"
    data: str


class Media(Message):
    TYPE: ClassVar[str] = "media"
    run_id: str
    mime: str
    data: str  # text formats raw, binary as a data: URI


class WaitingInput(Message):
    TYPE: ClassVar[str] = "waiting-input"
    run_id: str
    prompt: str = ""
    password: bool = False


class Finished(Message):
    """A run ended. ``engine_restarted`` says the REPL died and was started afresh (state lost)."""

    TYPE: ClassVar[str] = "finished"
    run_id: str
    exit_code: int
    wall_ms: float = 0.0
    engine_restarted: bool = False


class StepFinished(Message):
    """A batch step ("clean", "build") ended with ``exit_code``; the run goes on."""

    TYPE: ClassVar[str] = "step-finished"
    run_id: str
    step: str
    exit_code: int


class Completions(Message):
    TYPE: ClassVar[str] = "completions"
    items: List[str] = field(default_factory=list)


class Configured(Message):
    """``Configure`` is done: the next ``Execute`` sees the new environment."""

    TYPE: ClassVar[str] = "configured"


class PtyOutput(Message):
    """What a terminal's programs wrote, base64 in ``data``."""

    TYPE: ClassVar[str] = "pty-output"
    pty_id: str
    data: str


class PtyClosed(Message):
    """A terminal's shell ended (or could not start: ``message`` says why)."""

    TYPE: ClassVar[str] = "pty-closed"
    pty_id: str
    exit_code: int
    message: str = ""


class Failure(Message):
    """The runner could not do what a message asked (bad frame, busy engine...)."""

    TYPE: ClassVar[str] = "failure"
    message: str
    run_id: Optional[str] = None


if TYPE_CHECKING:
    AnyMessage = Union[
        Execute,
        Input,
        Interrupt,
        Complete,
        Configure,
        Shutdown,
        Ready,
        Output,
        Media,
        WaitingInput,
        Finished,
        StepFinished,
        Completions,
        Configured,
        Failure,
        PtyOpen,
        PtyInput,
        PtyResize,
        PtyAck,
        PtyClose,
        PtyOutput,
        PtyClosed,
    ]

_TO_RUNNER = (Execute, Input, Interrupt, Complete, Configure, Shutdown)
_TO_AGENT = (Ready, Output, Media, WaitingInput, Finished, StepFinished, Completions, Configured, Failure)
_TERMINALS = (PtyOpen, PtyInput, PtyResize, PtyAck, PtyClose, PtyOutput, PtyClosed)
MESSAGE_TYPES: Dict[str, Type[Message]] = {cls.TYPE: cls for cls in _TO_RUNNER + _TO_AGENT + _TERMINALS}


def encode(message: Message) -> bytes:
    body = message.as_dict()
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
    kind = body.pop("type", None)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError("unknown message type")
    unknown = set(body).difference(cls._FIELDS)
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
            payload = bytes(self._buf[HEADER.size : end])
            del self._buf[:end]  # a frame that fails to decode is dropped, not retried forever
            out.append(decode(payload))
        return out


def describe(message: Any) -> str:
    return "%s(%s)" % (getattr(message, "TYPE", "?"), getattr(message, "run_id", ""))
