"""The agent RPC server: the manager calls the agent's methods over HTTP.

Wire (one route per ``Agent`` method, all ``POST /rpc/<method>``, JSON bodies
of the bai.common.agent_rpc models, header ``X-BAI-Cluster-Secret`` checked in
constant time on every route):

    method            body              answer
    info              (none)            200 AgentInfo
    create_session    SandboxSpec       204
    destroy_session   SessionRef        200 SessionStats
    restart_session   SessionRef        204
    execute           ExecRequest       200 ExecResult
    interrupt         SessionRef        204
    complete          CompleteRequest   200 list[str]
    session_stats     SessionRef        200 SessionStats
    upload_file       the file's bytes  204   (FileUpload in the X-BAI-Args header; body streamed)
    download          FileDownload      200 multipart/mixed, one tar per path (streamed)
    list_files        FileListRequest   200 FileListing
    terminal          (WebSocket, GET)  see bai.agent.rpc_terminal

A failure answers ``RpcError`` (``error`` = the bai.common.errors class name)
with the status of its family: 400 InvalidRequest (bad body too), 413
RequestTooLarge, 401 AuthFailed, 404 NotFound, 503 ServiceUnavailable, 507
StorageFull, 500 anything else.

As in the manager (docs/decisions/0002), the handlers are plain Starlette
endpoints inside a FastAPI app, validating with our own models: FastAPI's
dependency resolution would cost a quarter of the hot path's budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from bai.agent.agent import Agent
from bai.agent.rpc_terminal import serve_terminal
from bai.common.agent_rpc import (
    CompleteRequest,
    ExecRequest,
    FileDownload,
    FileListRequest,
    FileUpload,
    RpcError,
    SandboxSpec,
    SessionRef,
)
from bai.common.errors import (
    AuthFailed,
    BaiError,
    InvalidRequest,
    NotFound,
    RequestTooLarge,
    ServiceUnavailable,
    StorageFull,
)

log = logging.getLogger(__name__)

SECRET_HEADER = "x-bai-cluster-secret"
ARGS_HEADER = "x-bai-args"
JSON = "application/json"

M = TypeVar("M", bound=BaseModel)
Result = BaseModel | list[str] | None
Endpoint = Callable[[Request], Awaitable[Response]]

_STRINGS = TypeAdapter(list[str])
_STATUS: list[tuple[type[BaiError], int]] = [
    (RequestTooLarge, 413),
    (InvalidRequest, 400),
    (StorageFull, 507),
    (AuthFailed, 401),
    (NotFound, 404),
    (ServiceUnavailable, 503),
]


def error_response(exc: BaiError) -> Response:
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    body = RpcError(
        error=type(exc).__name__,
        message=exc.message,
        field=exc.field if isinstance(exc, InvalidRequest) else None,
        data=exc.data,
    )
    return Response(body.model_dump_json(), status_code=status, media_type=JSON)


def _encode(result: Result) -> Response:
    if result is None:
        return Response(status_code=204)
    if isinstance(result, BaseModel):
        return Response(result.model_dump_json(), media_type=JSON)
    return Response(_STRINGS.dump_json(result), media_type=JSON)


def _parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        errors = exc.errors()
        if not errors:
            raise InvalidRequest(f"bad {model.__name__}: {exc}") from exc
        field = ".".join(str(part) for part in errors[0]["loc"]) or None
        raise InvalidRequest(f"bad {model.__name__}: {errors[0]['msg']}", field=field) from exc


class RpcApp:
    """Builds the app around one agent and the cluster secret."""

    def __init__(self, agent: Agent, secret: str) -> None:
        if not secret:
            raise ValueError("the agent RPC needs a cluster secret")
        self.agent = agent
        self._secret = secret.encode()

    def _authorized(self, request: Request) -> bool:
        given = request.headers.get(SECRET_HEADER, "").encode()
        return hmac.compare_digest(self._secret, given)

    def _endpoint(self, model: type[M], call: Callable[[M], Awaitable[Result]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if not self._authorized(request):
                return error_response(AuthFailed("X-BAI-Cluster-Secret: wrong or missing cluster secret"))
            try:
                return _encode(await call(_parse(model, await request.body())))
            except BaiError as exc:
                return error_response(exc)

        return endpoint

    async def _upload(self, request: Request) -> Response:
        if not self._authorized(request):
            return error_response(AuthFailed("X-BAI-Cluster-Secret: wrong or missing cluster secret"))
        try:
            args = _parse(FileUpload, request.headers.get(ARGS_HEADER, "").encode())
            await self.agent.upload_file(args, request.stream())
        except BaiError as exc:
            return error_response(exc)
        return Response(status_code=204)

    async def _download(self, request: Request) -> Response:
        if not self._authorized(request):
            return error_response(AuthFailed("X-BAI-Cluster-Secret: wrong or missing cluster secret"))
        try:
            stream = await self.agent.download(_parse(FileDownload, await request.body()))
        except BaiError as exc:
            return error_response(exc)
        return StreamingResponse(stream.chunks, media_type=stream.media_type)

    async def _info(self, request: Request) -> Response:
        if not self._authorized(request):
            return error_response(AuthFailed("X-BAI-Cluster-Secret: wrong or missing cluster secret"))
        return _encode(self.agent.info())

    async def _terminal(self, ws: WebSocket) -> None:
        await serve_terminal(ws, self.agent, self._secret, error_response)

    async def _destroy(self, ref: SessionRef) -> Result:
        return await self.agent.destroy_session(ref.session_id)

    async def _restart(self, ref: SessionRef) -> Result:
        await self.agent.restart_session(ref.session_id)
        return None

    async def _interrupt(self, ref: SessionRef) -> Result:
        await self.agent.interrupt(ref.session_id)
        return None

    async def _stats(self, ref: SessionRef) -> Result:
        return await self.agent.session_stats(ref.session_id)

    async def _create(self, spec: SandboxSpec) -> Result:
        await self.agent.create_session(spec)
        return None

    def build(self) -> FastAPI:
        agent = self.agent
        routes: list[BaseRoute] = [
            Route("/rpc/info", self._info, methods=["POST"]),
            Route("/rpc/create_session", self._endpoint(SandboxSpec, self._create), methods=["POST"]),
            Route("/rpc/destroy_session", self._endpoint(SessionRef, self._destroy), methods=["POST"]),
            Route("/rpc/restart_session", self._endpoint(SessionRef, self._restart), methods=["POST"]),
            Route("/rpc/execute", self._endpoint(ExecRequest, agent.execute), methods=["POST"]),
            Route("/rpc/interrupt", self._endpoint(SessionRef, self._interrupt), methods=["POST"]),
            Route("/rpc/complete", self._endpoint(CompleteRequest, agent.complete), methods=["POST"]),
            Route("/rpc/session_stats", self._endpoint(SessionRef, self._stats), methods=["POST"]),
            Route("/rpc/upload_file", self._upload, methods=["POST"]),
            Route("/rpc/download", self._download, methods=["POST"]),
            Route("/rpc/list_files", self._endpoint(FileListRequest, agent.list_files), methods=["POST"]),
            WebSocketRoute("/rpc/terminal", self._terminal),  # bai.agent.rpc_terminal
        ]
        return FastAPI(routes=routes, openapi_url=None, docs_url=None, redoc_url=None)


def create_app(agent: Agent, secret: str) -> FastAPI:
    return RpcApp(agent, secret).build()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals belong to whoever runs the agent, not to uvicorn


class RpcServer:
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
