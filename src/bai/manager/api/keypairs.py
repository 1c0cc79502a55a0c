"""``/admin/keypairs``: list, create, activate or deactivate, attach a resource policy
to, and delete keypairs. Admin only; a keypair cannot delete itself. The secret key is
returned once, in the answer to the create."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bai.common.errors import InvalidRequest, UrlNotFound
from bai.common.wire import KeypairCreated, KeypairCreateRequest, KeypairInfo, KeypairUpdateRequest
from bai.manager.api.deps import body_as, caller, manager_of, require_admin
from bai.manager.keypairs import Keypair


def _keypair_info(manager_request: Request, keypair: Keypair) -> KeypairInfo:
    sessions = manager_of(manager_request).sessions.live_sessions(keypair.access_key)
    return KeypairInfo(
        access_key=keypair.access_key,
        user_id=keypair.user_id,
        is_admin=keypair.is_admin,
        is_active=keypair.is_active,
        concurrency_limit=keypair.concurrency_limit,
        rate_limit=keypair.rate_limit,
        created_at=keypair.created_at.isoformat(),
        expires_at=keypair.expires_at.isoformat() if keypair.expires_at else None,
        num_sessions=len(sessions),
        resource_policy=keypair.resource_policy,
    )


async def list_keypairs(request: Request) -> Response:
    require_admin(await caller(request))
    keypairs = manager_of(request).keypairs.all()
    return JSONResponse({"items": [_keypair_info(request, k).model_dump() for k in keypairs]})


async def create_keypair(request: Request) -> Response:
    require_admin(await caller(request))
    req = await body_as(request, KeypairCreateRequest, required=False)
    manager_of(request).policies.named_by(req.resource_policy, "resource_policy")
    keypair = await manager_of(request).keypairs.create(
        user_id=req.user_id, is_admin=req.is_admin,
        concurrency_limit=req.concurrency_limit, rate_limit=req.rate_limit, expires_at=req.expires_at,
        resource_policy=req.resource_policy,
    )
    body = KeypairCreated(**_keypair_info(request, keypair).model_dump(), secret_key=keypair.secret_key)
    return JSONResponse(body.model_dump(), status_code=201)


async def set_keypair_active(request: Request) -> Response:
    require_admin(await caller(request))
    action = request.path_params["action"]
    if action not in ("activate", "deactivate"):
        raise UrlNotFound(f"no such API path: {request.url.path}")
    active = action == "activate"
    keypair = await manager_of(request).keypairs.set_active(request.path_params["ak"], active)
    return JSONResponse(_keypair_info(request, keypair).model_dump())


async def update_keypair(request: Request) -> Response:
    """``PATCH /admin/keypairs/{ak}`` ``{"resource_policy": name}``."""
    require_admin(await caller(request))
    req = await body_as(request, KeypairUpdateRequest)
    keypair = await manager_of(request).set_keypair_policy(request.path_params["ak"], req.resource_policy)
    return JSONResponse(_keypair_info(request, keypair).model_dump())


async def delete_keypair(request: Request) -> Response:
    me = await caller(request)
    require_admin(me)
    access_key = request.path_params["ak"]
    if access_key == me.access_key:
        raise InvalidRequest("access_key: a keypair cannot delete itself", field="access_key")
    await manager_of(request).keypairs.delete(access_key)
    return Response(status_code=204)
