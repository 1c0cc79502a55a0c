"""What every handler needs: the Manager, the caller's keypair (authenticated and
rate-counted), the API version, a validated body."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection, Request

from bai.common.errors import InsufficientPrivilege, InvalidRequest, RateLimitExceeded
from bai.common.versions import SERVER_VERSION, ApiVersion
from bai.manager.auth import SignedRequest, authenticate, request_version
from bai.manager.core import Manager
from bai.manager.keypairs import Keypair
from bai.manager.sessions import LiveSession

M = TypeVar("M", bound=BaseModel)


def manager_of(conn: HTTPConnection) -> Manager:
    manager: Manager = conn.app.state.manager
    return manager


def api_version(conn: HTTPConnection) -> ApiVersion:
    if "x-backendai-version" in conn.headers or "x-sorna-version" in conn.headers:
        return request_version(conn.headers)
    return ApiVersion.parse(SERVER_VERSION)


async def caller(conn: HTTPConnection) -> Keypair:
    """Authenticate the request (its Date against the manager's clock) and count it
    against the keypair's rate limit (its window on the same clock)."""
    manager = manager_of(conn)
    # a multipart body is signed as empty (bai.manager.auth): left unread, so an
    # upload handler can stream it
    multipart = conn.headers.get("content-type", "").lower().startswith("multipart/")
    body = await conn.body() if isinstance(conn, Request) and not multipart else b""
    signed = SignedRequest(
        method=conn.scope.get("method", "GET"),
        raw_path=conn.scope["state"]["raw_path"],
        headers=conn.headers,
        body=body,
    )
    clock = manager.clock
    keypair = authenticate(signed, manager.keypairs, clock.utc(), manager.config.max_clock_skew_s)
    decision = manager.rate_limiter.hit(keypair.access_key, keypair.rate_limit, clock.monotonic())
    conn.scope["state"]["rate"] = decision
    if not decision.allowed:
        raise RateLimitExceeded(
            f"the keypair made {keypair.rate_limit} requests in the last "
            f"{manager.config.rate_limit_window_s} s, its limit"
        )
    return keypair


def owner_key(conn: HTTPConnection, keypair: Keypair) -> str:
    """The access key whose sessions the request acts on: the caller's, or for an admin
    the ``owner_access_key`` query parameter."""
    owner = conn.query_params.get("owner_access_key")
    if not owner or owner == keypair.access_key:
        return keypair.access_key
    if not keypair.is_admin:
        raise InsufficientPrivilege("owner_access_key: only an admin keypair may act for another keypair")
    return owner


async def live_session(conn: HTTPConnection) -> LiveSession:
    """Authenticate, then find the live session named by the path's ``{id}`` among the
    owner's (see ``owner_key``); SessionNotFound otherwise."""
    keypair = await caller(conn)
    return manager_of(conn).sessions.find_live(owner_key(conn, keypair), conn.path_params["id"])


def _field_of(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_of(first["loc"])
        raise InvalidRequest(f"{field}: {first['msg']}", field=field) from None


async def json_body(request: Request, *, required: bool = True) -> Any:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise InvalidRequest("body: a JSON object is required", field="body")
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body: malformed JSON: {exc}", field="body") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    return data


async def body_as(request: Request, model: type[M], *, required: bool = True) -> M:
    return validate(model, await json_body(request, required=required))


def require_admin(keypair: Keypair) -> None:
    if not keypair.is_admin:
        raise InsufficientPrivilege("this needs an admin keypair")
