"""The agent → manager reports (bai.common.agent_calls ``REPORTS``): heartbeats and the
news that a session's sandbox is gone, each behind the cluster-secret check. ``routes``
makes one route per declared report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bai.common.agent_calls import HEARTBEAT, REPORTS, SECRET_HEADER, SESSION_GONE, Report, secret_matches
from bai.common.agent_rpc import AgentInfo, SessionGone
from bai.common.errors import AuthFailed
from bai.manager.api.deps import body_as, manager_of
from bai.manager.core import Manager


async def _heartbeat(manager: Manager, info: AgentInfo) -> None:
    manager.agent_heartbeat(info)


async def _session_gone(manager: Manager, gone: SessionGone) -> None:
    await manager.sessions.sandbox_gone(gone)


Handler = Callable[[Manager, BaseModel], Awaitable[None]]
HANDLERS: dict[Report[BaseModel], Handler] = {
    HEARTBEAT: _heartbeat,  # type: ignore[dict-item]
    SESSION_GONE: _session_gone,  # type: ignore[dict-item]
}


def _endpoint(report: Report[BaseModel], handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        manager = manager_of(request)
        if not secret_matches(manager.config.cluster_secret, request.headers.get(SECRET_HEADER, "")):
            raise AuthFailed(f"{SECRET_HEADER}: wrong or missing cluster secret")
        await handler(manager, await body_as(request, report.request))
        return Response(status_code=204)

    return endpoint


def routes() -> list[Route]:
    """One POST route per declared report; a report without a handler is a bug, found at start."""
    missing = [report.name for report in REPORTS if report not in HANDLERS]
    if missing:
        raise RuntimeError(f"agent reports without a handler: {missing}")
    return [Route(report.path, _endpoint(report, HANDLERS[report]), methods=["POST"]) for report in REPORTS]
