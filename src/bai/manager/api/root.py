"""``GET /``: the unauthenticated root, which names the API version this server speaks
(clients read it to choose their dialect) and the manager's own version."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bai.common.versions import SERVER_VERSION

MANAGER_VERSION = "bai 0.1.0"


async def root(request: Request) -> Response:
    return JSONResponse({"version": SERVER_VERSION, "manager": MANAGER_VERSION})
