"""The manager's ASGI application: routes, error mapping, the edge middleware.

Handlers are plain Starlette endpoints (FastAPI's per-request dependency and
validation machinery costs ~0.25 ms a call on this hot path; bodies are validated
with our pydantic models in ``deps``), mounted on a FastAPI app for its OpenAPI
and lifespan plumbing."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from bai.common.errors import BaiError, MethodNotAllowed, UrlNotFound
from bai.manager.api import (
    agent_reports,
    agents,
    auth,
    environments,
    events,
    execute,
    files,
    keypairs,
    policies,
    root,
    session,
    stream,
    terminal,
)
from bai.manager.api.middleware import EdgeMiddleware
from bai.manager.api.problems import problem, problem_for
from bai.manager.core import Manager

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def _session_routes() -> list[Route]:
    routes: list[Route] = []
    for prefix in ("/session", "/kernel"):
        routes += [
            Route(prefix, session.create, methods=["POST"]),
            Route(prefix, session.list_sessions, methods=["GET"]),
            Route(f"{prefix}/_/create", session.create, methods=["POST"]),
            Route(f"{prefix}/create", session.create, methods=["POST"]),
            Route(f"{prefix}/_/match", session.match, methods=["GET"]),
            Route(f"{prefix}/{{id}}", session.info, methods=["GET"]),
            Route(f"{prefix}/{{id}}", session.destroy, methods=["DELETE"]),
            Route(f"{prefix}/{{id}}", session.restart, methods=["PATCH"]),
            Route(f"{prefix}/{{id}}", execute.execute, methods=["POST"]),
            Route(f"{prefix}/{{id}}/interrupt", execute.interrupt, methods=["POST"]),
            Route(f"{prefix}/{{id}}/complete", execute.complete, methods=["POST"]),
            Route(f"{prefix}/{{id}}/rename", session.rename, methods=["POST"]),
            Route(f"{prefix}/{{id}}/upload", files.upload, methods=["POST"]),
            Route(f"{prefix}/{{id}}/download", files.download, methods=["GET", "POST"]),
            Route(f"{prefix}/{{id}}/files", files.list_files, methods=["GET"]),
        ]
    return routes


def _routes() -> list[Route | WebSocketRoute]:
    return [
        Route("/", root.root, methods=["GET"]),
        Route("/auth", auth.auth_test, methods=["GET", "POST"]),
        Route("/auth/test", auth.auth_test, methods=["GET", "POST"]),
        *_session_routes(),
        Route("/events/session", events.session_events, methods=["GET"]),
        Route("/stream/kernel/_/events", events.session_events, methods=["GET"]),
        WebSocketRoute("/stream/session/{id}/execute", stream.stream_execute),
        WebSocketRoute("/stream/kernel/{id}/execute", stream.stream_execute),
        WebSocketRoute("/stream/session/{id}/pty", terminal.stream_pty),
        WebSocketRoute("/stream/kernel/{id}/pty", terminal.stream_pty),
        Route("/environments", environments.list_environments, methods=["GET"]),
        Route("/admin/agents", agents.list_agents, methods=["GET"]),
        Route("/admin/keypairs", keypairs.list_keypairs, methods=["GET"]),
        Route("/admin/keypairs", keypairs.create_keypair, methods=["POST"]),
        Route("/admin/keypairs/{ak}/{action:str}", keypairs.set_keypair_active, methods=["POST"]),
        Route("/admin/keypairs/{ak}", keypairs.update_keypair, methods=["PATCH"]),
        Route("/admin/keypairs/{ak}", keypairs.delete_keypair, methods=["DELETE"]),
        Route("/admin/resource-policies", policies.list_policies, methods=["GET"]),
        Route("/admin/resource-policies", policies.create_policy, methods=["POST"]),
        Route("/admin/resource-policies/{name}", policies.update_policy, methods=["PATCH"]),
        Route("/admin/resource-policies/{name}", policies.delete_policy, methods=["DELETE"]),
        *agent_reports.routes(),
    ]


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BaiError)
    return problem_for(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem_for(UrlNotFound(f"no such API path: {request.method} {request.url.path}"))
    if exc.status_code == 405:
        return problem_for(MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}"))
    return problem("generic-bad-request", exc.status_code, "Bad request.", str(exc.detail))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem("internal-server-error", 500, "Something has gone wrong.",
                   "an unexpected error happened on the server; it was logged")


def create_app(manager: Manager) -> FastAPI:
    app = FastAPI(title="bai manager", openapi_url=None, docs_url=None, redoc_url=None,
                  routes=_routes())  # type: ignore[arg-type]
    app.state.manager = manager
    app.add_exception_handler(BaiError, _on_domain_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(EdgeMiddleware, window_s=manager.config.rate_limit_window_s)
    return app
