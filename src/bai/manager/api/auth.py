"""``GET|POST /auth`` (and ``/auth/test``): checks the caller's signature and echoes
``echo`` back, as Backend.AI's auth test does; ``bai`` uses it to check a keypair."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bai.common.errors import InvalidRequest
from bai.manager.api.deps import caller, json_body


async def auth_test(request: Request) -> Response:
    await caller(request)
    data = await json_body(request, required=False) if request.method == "POST" else {}
    echo = data.get("echo", request.query_params.get("echo", ""))
    if not isinstance(echo, str):
        raise InvalidRequest("echo: must be a string", field="echo")
    return JSONResponse({"authorized": "yes", "echo": echo})
