"""The agent RPC's one declaration (bai.common.agent_calls) against what is derived from
it: every call has a route of its kind, a handler on the agent and a client method that
sends it; errors come out as the call declares them, in process and over HTTP alike."""

from __future__ import annotations

import inspect
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from agent_sandbox import make_config
from pydantic import BaseModel
from starlette.routing import Route, WebSocketRoute

from bai.agent.agent import Agent
from bai.agent.rpc import create_app
from bai.agent.rpc_handlers import AgentHandlers
from bai.common import errors
from bai.common.agent_calls import (
    CALLS,
    ERROR_CLASSES,
    INTERRUPT,
    LIST_FILES,
    AgentCall,
    Call,
    Download,
    Kind,
    Upload,
    WebSocketCall,
    rpc_error,
)
from bai.common.agent_rpc import (
    AgentInfo,
    ByteStream,
    CompleteRequest,
    ExecRequest,
    FileDownload,
    FileListRequest,
    FileUpload,
    RpcError,
    SandboxSpec,
)
from bai.common.terminal import Terminal
from bai.manager.agent_client import AgentClient
from bai.manager.agent_http import HttpAgentClient
from bai.server.agent_client import InProcessAgentClient

SECRET = "unit-secret"


@pytest.fixture
def agent() -> Iterator[Agent]:
    """An agent whose backend is not started: enough for the routes and for refusals."""
    config = make_config()
    yield Agent(config)
    shutil.rmtree(config.data_dir, ignore_errors=True)


def http_client(agent: Agent, secret: str = SECRET) -> HttpAgentClient:
    """The HTTP client against the agent's real RPC app, served in process."""
    info = AgentInfo(agent_id="a1", rpc_url="http://agent.test", backend="local", capacity={},
                     environments=[], version="0")
    return HttpAgentClient(info, secret, transport=httpx.ASGITransport(app=create_app(agent, SECRET)))


def test_every_call_has_a_route_of_its_kind_and_nothing_else_is_served(agent: Agent) -> None:
    app = create_app(agent, SECRET)
    routes = {route.path: route for route in app.routes if isinstance(route, Route | WebSocketRoute)}
    assert set(routes) == {call.path for call in CALLS}
    for call in CALLS:
        route = routes[call.path]
        if call.kind == Kind.WEBSOCKET:
            assert isinstance(route, WebSocketRoute), call.name
        else:
            assert isinstance(route, Route) and route.methods == {"POST"}, call.name


def test_every_call_has_a_handler_and_names_are_unique(agent: Agent) -> None:
    handlers = AgentHandlers(agent)  # raises when a declared call has none
    assert len({call.name for call in CALLS}) == len(CALLS)
    for call in CALLS:
        assert callable(getattr(agent, call.name)), f"Agent has no method {call.name}"
        match call:
            case Call():
                assert callable(handlers.call(call))
            case Upload():
                assert callable(handlers.upload(call))
            case Download():
                assert callable(handlers.download(call))
            case WebSocketCall():
                assert callable(handlers.websocket(call))


class Sent(Exception):
    def __init__(self, call: AgentCall[BaseModel], request: BaseModel) -> None:
        super().__init__(call.name)
        self.call, self.request = call, request


class RecordingClient(AgentClient):
    """Says which call each named method sends, by raising it."""

    async def send_call(self, call: Call[Any, Any], request: BaseModel) -> Any:
        raise Sent(call, request)

    async def send_upload(self, call: Upload[Any], request: BaseModel, chunks: AsyncIterator[bytes]) -> None:
        raise Sent(call, request)

    async def send_download(self, call: Download[Any], request: BaseModel) -> ByteStream:
        raise Sent(call, request)

    async def open_websocket(self, call: WebSocketCall[Any], request: BaseModel) -> Terminal:
        raise Sent(call, request)


async def _no_chunks() -> AsyncIterator[bytes]:
    yield b""


#: the arguments of each named client method
ARGUMENTS: dict[str, tuple[Any, ...]] = {
    "info": (),
    "create_session": (SandboxSpec(session_id="s", session_name="n", environment="python", resources={}),),
    "destroy_session": ("s",),
    "restart_session": ("s",),
    "execute": (ExecRequest(session_id="s", mode="query"),),
    "interrupt": ("s",),
    "complete": (CompleteRequest(session_id="s", code="pri"),),
    "session_stats": ("s",),
    "list_files": (FileListRequest(session_id="s"),),
    "upload_file": (FileUpload(session_id="s", path="a", max_bytes=1), _no_chunks()),
    "download": (FileDownload(session_id="s", paths=["a"], max_bytes=1),),
    "open_terminal": ("s", 24, 80),
}


async def test_every_call_has_a_client_method_that_sends_it() -> None:
    assert set(ARGUMENTS) == {call.name for call in CALLS}
    assert not inspect.isabstract(HttpAgentClient) and not inspect.isabstract(InProcessAgentClient)
    client = RecordingClient()
    for call in CALLS:
        with pytest.raises(Sent) as sent:
            await getattr(client, call.name)(*ARGUMENTS[call.name])
        assert sent.value.call is call
        assert isinstance(sent.value.request, call.request)


def _instance(cls: type[errors.BaiError]) -> errors.BaiError:
    if issubclass(cls, errors.SessionAlreadyExists):
        return cls("exists", existing_session_id="s9")
    if issubclass(cls, errors.InvalidRequest):
        return cls("bad", field="path", data={"k": 1})
    return cls("failed", data={"k": 1})


def test_every_error_of_the_tree_travels_as_itself() -> None:
    anything = Call(name="anything", request=BaseModel, answer=INTERRUPT.answer, raises=(errors.BaiError,))
    for cls in ERROR_CLASSES.values():
        sent = _instance(cls)
        back = anything.error_from(RpcError.model_validate_json(rpc_error(sent).model_dump_json()))
        assert type(back) is cls
        assert (back.message, back.data) == (sent.message, sent.data)
        if isinstance(sent, errors.InvalidRequest):
            assert isinstance(back, errors.InvalidRequest) and back.field == "path"


def test_an_undeclared_or_unknown_error_is_an_operation_failed_that_names_it() -> None:
    undeclared = INTERRUPT.error_from(RpcError(error="StorageFull", message="disk full"))
    assert type(undeclared) is errors.OperationFailed
    assert "StorageFull" in undeclared.message and "interrupt" in undeclared.message
    unknown = INTERRUPT.error_from(RpcError(error="KernelPanic", message="oops"))
    assert type(unknown) is errors.OperationFailed and "KernelPanic" in unknown.message
    # a declared class's subclass is itself, with its field
    too_large = LIST_FILES.error_from(RpcError(error="RequestTooLarge", message="big", field="path"))
    assert isinstance(too_large, errors.RequestTooLarge) and too_large.field == "path"
    # a subclass outside the tree (the agent's BackendUnavailable) travels as its parent
    class BackendGone(errors.ServiceUnavailable):
        pass

    assert rpc_error(BackendGone("no bwrap")).error == "ServiceUnavailable"


async def _disk_full(session_id: str) -> None:
    raise errors.StorageFull(f"{session_id}: disk full")


async def test_both_clients_raise_what_the_call_declares_and_nothing_else(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = http_client(agent)
    try:
        for client in (InProcessAgentClient(agent), http):
            with pytest.raises(errors.SessionNotFound):  # declared: raised as itself
                await client.session_stats("nope")
            with pytest.raises(errors.InvalidRequest):
                await client.create_session(SandboxSpec(session_id="../x", session_name="n", environment="python",
                                                        resources={}))
        monkeypatch.setattr(agent, "interrupt", _disk_full)
        for client in (InProcessAgentClient(agent), http):
            with pytest.raises(errors.OperationFailed) as failed:
                await client.interrupt("s1")
            assert type(failed.value) is errors.OperationFailed, type(client)
            assert "StorageFull" in failed.value.message and "s1: disk full" in failed.value.message
    finally:
        await http.close()


async def test_a_refused_secret_is_an_unavailable_agent_not_a_failed_signature(agent: Agent) -> None:
    wrong = http_client(agent, secret="not-the-secret")
    try:
        with pytest.raises(errors.ServiceUnavailable, match="cluster secret"):
            await wrong.info()
        right = http_client(agent)
        try:
            assert (await right.info()).agent_id == agent.config.agent_id
        finally:
            await right.close()
    finally:
        await wrong.close()
