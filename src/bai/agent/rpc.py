"""The agent RPC server: the routes of the calls declared in bai.common.agent_calls,
made from that table (one endpoint builder per kind of call) around the agent's
handlers (bai.agent.rpc_handlers). The module docstring of agent_calls has the wire.

The cluster secret is checked in one place, ``ClusterSecretCheck``: a middleware in
front of every route, HTTP and WebSocket alike, that compares ``X-BAI-Cluster-Secret``
in constant time and answers 401 ``AuthFailed`` before any route runs.

A failure answers ``RpcError`` (bai.common.agent_calls.rpc_error) with the status of its
class in bai.common.problems, the table the manager's API answers with too. A body that
does not parse is an InvalidRequest naming the field. An error the call does not declare
is logged here and answered as raised; the manager's client turns it into an
OperationFailed.

As in the manager (docs/decisions/0002), the handlers are plain Starlette
endpoints inside a FastAPI app, validating with our own models: FastAPI's
dependency resolution would cost a quarter of the hot path's budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TypeVar

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from bai.agent.agent import Agent
from bai.agent.rpc_handlers import AgentHandlers
from bai.agent.rpc_terminal import serve_terminal
from bai.common.agent_calls import (
    ARGS_HEADER,
    CALLS,
    SECRET_HEADER,
    AgentCall,
    Call,
    Download,
    Upload,
    WebSocketCall,
    rpc_error,
    secret_matches,
)
from bai.common.agent_rpc import ByteStream
from bai.common.errors import AuthFailed, BaiError, InvalidRequest
from bai.common.problems import classify
from bai.common.terminal import Terminal

log = logging.getLogger(__name__)

JSON = "application/json"

M = TypeVar("M", bound=BaseModel)
Req = TypeVar("Req", bound=BaseModel)
Ans = TypeVar("Ans")
Endpoint = Callable[[Request], Awaitable[Response]]


def error_response(exc: BaiError) -> Response:
    """The ``RpcError`` answer of a failure, with its status from bai.common.problems."""
    return Response(rpc_error(exc).model_dump_json(), status_code=classify(exc).status, media_type=JSON)


class ClusterSecretCheck:
    """The one check of the cluster secret: every HTTP request and WebSocket upgrade
    without the right ``X-BAI-Cluster-Secret`` is answered 401 AuthFailed here."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        if not secret:
            raise ValueError("the agent RPC needs a cluster secret")
        self.app = app
        self._secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._admits(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        refusal = error_response(AuthFailed(f"{SECRET_HEADER}: wrong or missing cluster secret"))
        if scope["type"] == "http":
            await refusal(scope, receive, send)
        else:
            await WebSocket(scope, receive, send).send_denial_response(refusal)

    def _admits(self, headers: Headers) -> bool:
        return secret_matches(self._secret, headers.get(SECRET_HEADER, ""))


def _parse(model: type[M], raw: bytes | Mapping[str, str]) -> M:
    """A request from a JSON body (empty: no fields) or a query string."""
    try:
        if isinstance(raw, bytes):
            return model.model_validate_json(raw or b"{}")
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        errors = exc.errors()
        if not errors:
            raise InvalidRequest(f"bad {model.__name__}: {exc}") from exc
        field = ".".join(str(part) for part in errors[0]["loc"]) or None
        raise InvalidRequest(f"bad {model.__name__}: {errors[0]['msg']}", field=field) from exc


def _failed(call: AgentCall[BaseModel], exc: BaiError) -> Response:
    if call.admit(exc) is not exc:
        log.warning("agent call %s raised %s, which it does not declare: %s", call.name, type(exc).__name__, exc)
    return error_response(exc)


# -- one endpoint builder per kind of call ----------------------------------------------


def _call_endpoint(call: Call[Req, Ans], handler: Callable[[Req], Awaitable[Ans]]) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            answer = await handler(_parse(call.request, await request.body()))
        except BaiError as exc:
            return _failed(call, exc)
        if answer is None:
            return Response(status_code=204)
        return Response(call.answer.dump_json(answer), media_type=JSON)

    return endpoint


def _upload_endpoint(call: Upload[Req], handler: Callable[[Req, AsyncIterator[bytes]], Awaitable[None]]) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            await handler(_parse(call.request, request.headers.get(ARGS_HEADER, "").encode()), request.stream())
        except BaiError as exc:
            return _failed(call, exc)
        return Response(status_code=204)

    return endpoint


def _download_endpoint(call: Download[Req], handler: Callable[[Req], Awaitable[ByteStream]]) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            stream = await handler(_parse(call.request, await request.body()))
        except BaiError as exc:
            return _failed(call, exc)
        return StreamingResponse(stream.chunks, media_type=stream.media_type)

    return endpoint


def _websocket_endpoint(
    call: WebSocketCall[Req], handler: Callable[[Req], Awaitable[Terminal]]
) -> Callable[[WebSocket], Awaitable[None]]:
    async def endpoint(ws: WebSocket) -> None:
        async def opening() -> Terminal:
            return await handler(_parse(call.request, ws.query_params))

        def refusal(exc: BaiError) -> Response:
            return _failed(call, exc)

        await serve_terminal(ws, opening(), refusal)

    return endpoint


def _route(call: AgentCall[BaseModel], handlers: AgentHandlers) -> BaseRoute:
    match call:
        case Call():
            return Route(call.path, _call_endpoint(call, handlers.call(call)), methods=["POST"])
        case Upload():
            return Route(call.path, _upload_endpoint(call, handlers.upload(call)), methods=["POST"])
        case Download():
            return Route(call.path, _download_endpoint(call, handlers.download(call)), methods=["POST"])
        case WebSocketCall():
            return WebSocketRoute(call.path, _websocket_endpoint(call, handlers.websocket(call)))
    raise TypeError(f"agent call {call.name}: no route for its kind {call.kind}")


def create_app(agent: Agent, secret: str) -> FastAPI:
    """The agent RPC app: one route per declared call, behind the cluster secret check."""
    handlers = AgentHandlers(agent)
    return FastAPI(
        routes=[_route(call, handlers) for call in CALLS],
        middleware=[Middleware(ClusterSecretCheck, secret=secret)],
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals belong to whoever runs the agent, not to uvicorn


class AgentRpcServer:
    """uvicorn serving ``create_app`` on the config's host and port (0: any free port)."""

    def __init__(self, agent: Agent, secret: str, host: str, port: int) -> None:
        config = uvicorn.Config(
            create_app(agent, secret),
            host=host,
            port=port,
            log_level="warning",
            server_header=False,
            date_header=False,
            lifespan="off",
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.port = port

    async def start(self) -> None:
        """Returns once the server listens; ``port`` is then the actual port."""
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the agent RPC server stopped while starting")
            await asyncio.sleep(0.005)
        sockets = [sock for server in self._server.servers for sock in server.sockets]
        self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None
