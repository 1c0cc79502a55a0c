"""The agent-facing internal routes: agent heartbeats and the news that a session's
sandbox is gone, both behind the cluster-secret check."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from bai.common.agent_rpc import AgentInfo, SessionGone
from bai.common.errors import AuthFailed
from bai.manager.api.deps import body_as, manager_of


def _check_cluster_secret(request: Request) -> None:
    secret = manager_of(request).config.cluster_secret
    given = request.headers.get("x-bai-cluster-secret", "")
    if not secret or not hmac.compare_digest(secret.encode(), given.encode()):
        raise AuthFailed("X-BAI-Cluster-Secret: wrong or missing cluster secret")


async def agent_heartbeat(request: Request) -> Response:
    _check_cluster_secret(request)
    info = await body_as(request, AgentInfo)
    manager_of(request).agent_heartbeat(info)
    return Response(status_code=204)


async def session_gone(request: Request) -> Response:
    _check_cluster_secret(request)
    gone = await body_as(request, SessionGone)
    await manager_of(request).sessions.sandbox_gone(gone)
    return Response(status_code=204)
