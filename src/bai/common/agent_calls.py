"""The agent RPC, declared once: every call the manager makes to an agent, with its
request model, its answer, the errors it may raise and how it travels (its kind).

    call             kind       request           answer
    info             call       NoArguments       AgentInfo
    create_session   call       SandboxSpec       None
    destroy_session  call       SessionRef        SessionStats
    restart_session  call       SessionRef        None
    execute          call       ExecRequest       RunResult (bai.common.wire: the API's own shape)
    interrupt        call       SessionRef        None
    complete         call       CompleteRequest   list[str]
    session_stats    call       SessionRef        SessionStats
    list_files       call       FileListRequest   FileListing
    upload_file      upload     FileUpload        None           (the file's bytes streamed in)
    download         download   FileDownload      ByteStream     (multipart/mixed, one tar per path)
    open_terminal    websocket  TerminalRequest   a Terminal     (frames: bai.agent.rpc_terminal)

Everything else is derived from ``CALLS``: the manager's ``AgentClient`` and its two
implementations (``HttpAgentClient`` in bai.manager.agent_http, ``InProcessAgentClient``
in bai.server.agent_client), and the agent's routes (bai.agent.rpc, which binds each call to
the ``Agent`` method of the same name once, for the routes and the in-process client
alike). tests/unit/test_agent_calls.py checks that each call has all three.

How each kind travels over HTTP, at ``<rpc_url>/rpc/<name>``, the cluster secret in
``X-BAI-Cluster-Secret`` on every request:

    call       POST, the request as JSON; the answer as JSON, or 204 for None
    upload     POST, the request as JSON in the X-BAI-Args header, the body the byte stream; 204
    download   POST, the request as JSON; the answer a streamed body of its own media type
    websocket  GET upgraded to a WebSocket, the request in the query string

A failure answers ``RpcError`` (``error`` names the bai.common.errors class) with the
HTTP status of bai.common.problems.

The other direction, agent → manager, is declared here too (``REPORTS``): two reports an
agent posts to ``<manager>/internal/<name>``, each a model answered 204, with the same
secret header. ``bai.agent.heartbeat.ManagerClient`` sends them; the manager's routes
(bai.manager.api.agent_reports) are made from the same table. Both ends check the secret
with ``secret_matches``.

Errors: a call raises what it declares (any subclass included) and ``TRANSPORT_ERRORS``,
which any call may meet on its way. Anything else that comes back, in process or over
HTTP, is turned into an OperationFailed that names it (``AgentCall.admit``): the manager
never meets an agent error it was not told to expect.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter

from bai.common import errors
from bai.common.agent_rpc import (
    AgentInfo,
    CompleteRequest,
    ExecRequest,
    FileDownload,
    FileListing,
    FileListRequest,
    FileUpload,
    NoArguments,
    RpcError,
    SandboxSpec,
    SessionGone,
    SessionRef,
    SessionStats,
    TerminalRequest,
)
from bai.common.errors import (
    AuthFailed,
    BaiError,
    ExecutionFailed,
    InvalidRequest,
    NotFound,
    NotImplementedFeature,
    OperationFailed,
    ServiceUnavailable,
    SessionAlreadyExists,
    SessionCreationFailed,
    SessionDestructionFailed,
    SessionNotFound,
    SessionRestartFailed,
    StorageFull,
)
from bai.common.wire import RunResult

Req_co = TypeVar("Req_co", bound=BaseModel, covariant=True)
Ans = TypeVar("Ans")

SECRET_HEADER = "X-BAI-Cluster-Secret"
ARGS_HEADER = "X-BAI-Args"  # an upload's request, whose body is the file

#: what any call may meet before (or instead of) the agent's method: a request that does
#: not parse, a cluster secret the agent refuses, an agent that cannot be reached
TRANSPORT_ERRORS: tuple[type[BaiError], ...] = (InvalidRequest, AuthFailed, ServiceUnavailable)

#: the error tree by class name: what an ``RpcError`` may name
ERROR_CLASSES: dict[str, type[BaiError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, BaiError) and cls.__module__ == errors.__name__
}


class Kind(StrEnum):
    """How a call travels (see the module docstring)."""

    CALL = "call"
    UPLOAD = "upload"
    DOWNLOAD = "download"
    WEBSOCKET = "websocket"


@dataclass(frozen=True, eq=False, kw_only=True)
class AgentCall(Generic[Req_co]):
    """One declared call. The subclass says its kind and, for ``Call``, its answer."""

    kind: ClassVar[Kind]
    name: str  # the route's last part and the method's name, on the Agent and on AgentClient
    request: type[Req_co]
    raises: tuple[type[BaiError], ...]

    @property
    def path(self) -> str:
        return f"/rpc/{self.name}"

    def admit(self, exc: BaiError) -> BaiError:
        """``exc`` as the manager sees it: itself when the call declares its class (or a
        parent) or it is a transport error, else an OperationFailed that names it."""
        if isinstance(exc, (*self.raises, *TRANSPORT_ERRORS)):
            return exc
        return OperationFailed(
            f"agent call {self.name}: {type(exc).__name__}, which the call does not declare: {exc.message}",
            data=exc.data,
        )

    def error_from(self, body: RpcError) -> BaiError:
        """The error an ``RpcError`` answer names, built again and ``admit``-ed."""
        cls = ERROR_CLASSES.get(body.error)
        if cls is None:
            return OperationFailed(f"agent call {self.name}: an unknown error {body.error!r}: {body.message}",
                                   data=body.data)
        return self.admit(_rebuild(cls, body))


@dataclass(frozen=True, eq=False, kw_only=True)
class Call(AgentCall[Req_co], Generic[Req_co, Ans]):
    """A request answered by one value: ``answer`` validates it (None: no content)."""

    kind: ClassVar[Kind] = Kind.CALL
    answer: TypeAdapter[Ans]


@dataclass(frozen=True, eq=False, kw_only=True)
class Upload(AgentCall[Req_co]):
    """A request with a byte stream in, answered by nothing."""

    kind: ClassVar[Kind] = Kind.UPLOAD


@dataclass(frozen=True, eq=False, kw_only=True)
class Download(AgentCall[Req_co]):
    """A request answered by a byte stream (bai.common.agent_rpc.ByteStream)."""

    kind: ClassVar[Kind] = Kind.DOWNLOAD


@dataclass(frozen=True, eq=False, kw_only=True)
class WebSocketCall(AgentCall[Req_co]):
    """A request answered by a terminal (bai.common.terminal.Terminal) that lives as long
    as the connection."""

    kind: ClassVar[Kind] = Kind.WEBSOCKET


def rpc_error(exc: BaiError) -> RpcError:
    """``exc`` as an ``RpcError`` body, named by its nearest class of the error tree (a
    module's own subclass, such as the agent's BackendUnavailable, travels as its parent)."""
    cls = next(c for c in type(exc).__mro__ if ERROR_CLASSES.get(c.__name__) is c)
    field = exc.field if isinstance(exc, InvalidRequest) else None
    return RpcError(error=cls.__name__, message=exc.message, field=field, data=exc.data)


def _rebuild(cls: type[BaiError], body: RpcError) -> BaiError:
    if issubclass(cls, InvalidRequest):
        return cls(body.message, field=body.field, data=body.data)
    if issubclass(cls, SessionAlreadyExists):
        existing = body.data.get("existingSessionId") if isinstance(body.data, dict) else None
        return cls(body.message, existing_session_id=str(existing or ""))
    return cls(body.message, data=body.data)


NO_ANSWER: TypeAdapter[None] = TypeAdapter(type(None))
_SESSION: tuple[type[BaiError], ...] = (SessionNotFound,)
#: bai.agent.files: a bad or missing path, a size over the cap, a full disk, a backend
#: without file transfer, and OperationFailed for whatever else the kernel refuses
_FILES: tuple[type[BaiError], ...] = (NotFound, InvalidRequest, StorageFull, NotImplementedFeature, OperationFailed)

INFO = Call(name="info", request=NoArguments, answer=TypeAdapter(AgentInfo), raises=())
CREATE_SESSION = Call(name="create_session", request=SandboxSpec, answer=NO_ANSWER,
                      raises=(InvalidRequest, SessionCreationFailed))
DESTROY_SESSION = Call(name="destroy_session", request=SessionRef, answer=TypeAdapter(SessionStats),
                       raises=(*_SESSION, SessionDestructionFailed))
RESTART_SESSION = Call(name="restart_session", request=SessionRef, answer=NO_ANSWER,
                       raises=(*_SESSION, SessionRestartFailed))
EXECUTE = Call(name="execute", request=ExecRequest, answer=TypeAdapter(RunResult),
               raises=(*_SESSION, InvalidRequest, ExecutionFailed))
INTERRUPT = Call(name="interrupt", request=SessionRef, answer=NO_ANSWER, raises=_SESSION)
COMPLETE = Call(name="complete", request=CompleteRequest, answer=TypeAdapter(list[str]),
                raises=(*_SESSION, ExecutionFailed))
SESSION_STATS = Call(name="session_stats", request=SessionRef, answer=TypeAdapter(SessionStats), raises=_SESSION)
LIST_FILES = Call(name="list_files", request=FileListRequest, answer=TypeAdapter(FileListing), raises=_FILES)
UPLOAD_FILE = Upload(name="upload_file", request=FileUpload, raises=_FILES)
DOWNLOAD = Download(name="download", request=FileDownload, raises=_FILES)
OPEN_TERMINAL = WebSocketCall(name="open_terminal", request=TerminalRequest,
                              raises=(*_SESSION, InvalidRequest, ExecutionFailed, NotImplementedFeature))

#: every call, in the order of the module docstring's table
CALLS: tuple[AgentCall[BaseModel], ...] = (
    INFO, CREATE_SESSION, DESTROY_SESSION, RESTART_SESSION, EXECUTE, INTERRUPT, COMPLETE,
    SESSION_STATS, LIST_FILES, UPLOAD_FILE, DOWNLOAD, OPEN_TERMINAL,
)  # fmt: skip


def secret_matches(expected: str, given: str) -> bool:
    """Whether ``given`` is the cluster secret, in constant time; never for an empty secret."""
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


@dataclass(frozen=True, kw_only=True)
class Report(Generic[Req_co]):
    """One agent → manager report: ``request`` posted as JSON, answered 204."""

    name: str
    request: type[Req_co]

    @property
    def path(self) -> str:
        return f"/internal/{self.name}"


#: the first heartbeat registers the agent; the manager marks it lost when they stop
HEARTBEAT = Report(name="agents/heartbeat", request=AgentInfo)
#: a session's sandbox ended without being asked to (its runner died, the OOM killer)
SESSION_GONE = Report(name="sessions/gone", request=SessionGone)
REPORTS: tuple[Report[BaseModel], ...] = (HEARTBEAT, SESSION_GONE)
