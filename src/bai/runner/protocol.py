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
PROTOCOL_VERSION = 2  # 2: Execute.script


class ProtocolError(Exception):
    """A frame that is not a message of this protocol."""


class VersionMismatch(ProtocolError):
    """A runner's ``Ready`` announces another protocol version than this module's."""


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
        kinds: Dict[str, str] = {}
        for base in bases:
            fields.extend(getattr(base, "_FIELDS", ()))
            defaults.update(getattr(base, "_DEFAULTS", {}))
            kinds.update(getattr(base, "_ANNOTATIONS", {}))
        annotations = namespace.get("__annotations__", {})
        own = [key for key, kind in annotations.items() if not _is_class_var(kind)]
        kinds.update((key, annotations[key]) for key in own)
        for key in own:
            if key in namespace:
                defaults[key] = namespace.pop(key)
            elif defaults:
                raise TypeError("%s: field %r without a default follows one with a default" % (name, key))
        namespace["__slots__"] = tuple(own)
        namespace["_FIELDS"] = tuple(fields + own)
        namespace["_DEFAULTS"] = defaults
        namespace["_ANNOTATIONS"] = kinds
        return super().__new__(mcs, name, bases, namespace)


class Record(metaclass=_RecordType):
    """Base of the runner's plain records: positional or keyword ``__init__`` in field
    order, ``==`` field by field within one class, a dataclass-like ``repr``."""

    _FIELDS: ClassVar[Tuple[str, ...]] = ()
    _DEFAULTS: ClassVar[Dict[str, Any]] = {}
    _ANNOTATIONS: ClassVar[Dict[str, str]] = {}  # each field's annotation, as written
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
    set or the build fails. ``script``: the query's code is a whole file, run as a
    script: the python engine displays no value of a final expression (an interactive
    query does, as at a prompt)."""

    TYPE: ClassVar[str] = "execute"
    run_id: str
    code: str
    mode: str = "query"
    source: str = ""
    steps: List[List[str]] = field(default_factory=list)
    build_log: bool = False
    script: bool = False


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
# What a runner sends must be text UTF-8 can carry: the agent passes it on in JSON. What
# the agent sends may carry what a user typed, lone surrogates included: the runner copes.
_FROM_RUNNER = frozenset((*_TO_AGENT, PtyOutput, PtyClosed))


def encode(message: Message) -> bytes:
    body = message.as_dict()
    body["type"] = message.TYPE
    # "replace": a lone surrogate (from undecodable input) becomes "?" rather than an error
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> Message:
    """Decode one frame's payload (without its length header) into its message, its
    fields checked against their annotations (``check_fields``; the strings of a runner's
    message must also encode as UTF-8). A ``Ready`` of another
    protocol version raises ``VersionMismatch`` before anything else of it is read: a
    runner of another version may announce itself with fields this one does not know.
    Raises ProtocolError, never anything else."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("frame is not UTF-8 JSON: %s" % exc) from None
    if not isinstance(body, dict):
        raise ProtocolError("frame is not a JSON object")
    kind = body.pop("type", None)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError("unknown message type")
    if cls is Ready:
        _check_version(body)
    check_fields(cls, body, text=cls in _FROM_RUNNER)
    try:
        message: Message = cls(**body)
    except TypeError as exc:
        raise ProtocolError("bad fields for %s: %s" % (cls.TYPE, exc)) from None
    return message


def _check_version(body: Dict[str, Any]) -> None:
    version = body.get("protocol")
    if type(version) is int and version == PROTOCOL_VERSION:
        return
    if type(version) is int and INT_MIN <= version <= INT_MAX:
        said = "speaks protocol version %d" % version
    else:
        said = "announces no protocol version we can read (%s)" % _shorten(version)
    raise VersionMismatch("the runner %s; this agent speaks version %d" % (said, PROTOCOL_VERSION))


# -- field types ----------------------------------------------------------------
#
# A frame may come from a compromised sandbox: each field's value must be of its
# annotated type, so no handler meets a list where it reads a str, a bool for an int
# or a number no 64-bit column holds. The annotations are the strings ``from
# __future__ import annotations`` leaves (never evaluated: the runner imports no
# typing); each class's checks are made on its first decode and kept.

INT_MIN, INT_MAX = -(2**63), 2**63 - 1

if TYPE_CHECKING:
    Check = Callable[[object, bool], bool]


def _is_str(value: object, text: bool) -> bool:
    # text: the value must encode as UTF-8 (a JSON "\ud800" escape makes a lone surrogate)
    return type(value) is str and (not text or value.isascii() or _encodes(value))


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value: object, text: bool) -> bool:
    return type(value) is int and INT_MIN <= value <= INT_MAX


def _is_float(value: object, text: bool) -> bool:
    # an int is a float here, as JSON writes 0.0 as 0 in some encoders; never a bool, inf or nan
    return (type(value) is float and value - value == 0.0) or _is_int(value, text)


def _is_bool(value: object, text: bool) -> bool:
    return type(value) is bool


def _is_anything(value: object, text: bool) -> bool:
    return True


_SIMPLE: Dict[str, Check] = {"str": _is_str, "int": _is_int, "float": _is_float, "bool": _is_bool, "Any": _is_anything}


def _list_of(item: Check) -> Check:
    def check(value: object, text: bool) -> bool:
        return type(value) is list and all(item(element, text) for element in value)

    return check


def _dict_of(key: Check, item: Check) -> Check:
    def check(value: object, text: bool) -> bool:
        return type(value) is dict and all(key(k, text) and item(v, text) for k, v in value.items())

    return check


def _optional(item: Check) -> Check:
    def check(value: object, text: bool) -> bool:
        return value is None or item(value, text)

    return check


def _type_check(annotation: str) -> Check:
    """The check of an annotation among str, int, float, bool, Any, List[X],
    Dict[K, V], Optional[X]; TypeError for any other (a new field needs a new check)."""
    annotation = annotation.strip()
    if annotation in _SIMPLE:
        return _SIMPLE[annotation]
    head, bracket, rest = annotation.partition("[")
    if not bracket or not rest.endswith("]"):
        raise TypeError("no check for the annotation %r" % annotation)
    args = [_type_check(arg) for arg in _split_arguments(rest[:-1])]
    if head == "List" and len(args) == 1:
        return _list_of(args[0])
    if head == "Dict" and len(args) == 2:
        return _dict_of(args[0], args[1])
    if head == "Optional" and len(args) == 1:
        return _optional(args[0])
    raise TypeError("no check for the annotation %r" % annotation)


def _split_arguments(text: str) -> List[str]:
    """``"str, List[str]"`` → ``["str", "List[str]"]``: commas at the top level only."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


_CHECKS: Dict[type, Tuple[Tuple[str, str, Check], ...]] = {}


def field_checks(cls: Type[Record]) -> Tuple[Tuple[str, str, Check], ...]:
    """``(name, annotation, check)`` for each field of ``cls``, made once and kept."""
    checks = _CHECKS.get(cls)
    if checks is None:
        kinds = cls._ANNOTATIONS
        checks = tuple((name, kinds[name], _type_check(kinds[name])) for name in cls._FIELDS)
        _CHECKS[cls] = checks
    return checks


def check_fields(cls: Type[Record], body: Dict[str, Any], text: bool = False) -> None:
    """Raise ProtocolError unless ``body`` holds only fields of ``cls``, each of its
    annotated type (``text``: every str also encodes as UTF-8). A missing field is
    left to the constructor: it has a default or the constructor says it is missing."""
    unknown = set(body).difference(cls._FIELDS)
    if unknown:
        raise ProtocolError("unknown fields for %s: %s" % (getattr(cls, "TYPE", cls.__name__), sorted(unknown)[:8]))
    for name, annotation, check in field_checks(cls):
        if name in body and not check(body[name], text):
            raise ProtocolError(
                "field %r of %s is not %s: %s"
                % (name, getattr(cls, "TYPE", cls.__name__), annotation, _shorten(body[name]))
            )


def _shorten(value: object) -> str:
    """A value for an error message: its type and at most 40 characters of its repr
    (a repr of a huge int is refused past 4300 digits; a huge list is long)."""
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        return "an int of %d bits" % value.bit_length()
    text = repr(value)
    return "%s %s" % (type(value).__name__, text if len(text) <= 40 else text[:37] + "...")


class FrameBuffer:
    """Splits a byte stream into messages; feed it what ``recv`` returns (the agent's
    end of a runner socket)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Tuple[List[Message], Optional[ProtocolError]]:
        """The messages completed by ``data``, in order, up to the first frame that is
        not one; then that frame's error (the stream after it is not to be trusted:
        the buffer is not read further)."""
        self._buf += data
        out: List[Message] = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > MAX_FRAME:
                return out, ProtocolError("frame of %d bytes is over the limit" % size)
            end = HEADER.size + size
            if len(self._buf) < end:
                break
            payload = bytes(self._buf[HEADER.size : end])
            del self._buf[:end]
            try:
                out.append(decode(payload))
            except ProtocolError as exc:
                return out, exc
        return out, None


def describe(message: Any) -> str:
    return "%s(%s)" % (getattr(message, "TYPE", "?"), getattr(message, "run_id", ""))
