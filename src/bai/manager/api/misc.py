"""The unauthenticated root, the auth check, the admin keypair and resource policy
routes and the agent-facing internal routes."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bai.common.agent_rpc import AgentInfo, SessionGone
from bai.common.errors import AuthFailed, InvalidRequest, UrlNotFound
from bai.common.resources import format_slots
from bai.common.versions import SERVER_VERSION
from bai.common.wire import (
    KeypairCreated,
    KeypairCreateRequest,
    KeypairInfo,
    KeypairUpdateRequest,
    ResourcePolicyCreateRequest,
    ResourcePolicyFields,
    ResourcePolicyInfo,
)
from bai.manager.api.deps import body_as, caller, json_body, manager_of, require_admin
from bai.manager.keypairs import Keypair
from bai.manager.policies import ResourcePolicy, policy_changes

MANAGER_VERSION = "bai 0.1.0"


async def root(request: Request) -> Response:
    return JSONResponse({"version": SERVER_VERSION, "manager": MANAGER_VERSION})


async def auth_test(request: Request) -> Response:
    await caller(request)
    data = await json_body(request, required=False) if request.method == "POST" else {}
    echo = data.get("echo", request.query_params.get("echo", ""))
    if not isinstance(echo, str):
        raise InvalidRequest("echo: must be a string", field="echo")
    return JSONResponse({"authorized": "yes", "echo": echo})


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


def _policy_info(request: Request, policy: ResourcePolicy) -> ResourcePolicyInfo:
    return ResourcePolicyInfo(
        name=policy.name,
        total_resource_slots=format_slots(policy.total_resource_slots),
        max_session_slots=format_slots(policy.max_session_slots),
        max_pids=policy.max_pids,
        max_scratch_bytes=policy.max_scratch_bytes,
        exec_timeout_s=policy.exec_timeout_s,
        idle_timeout_s=policy.idle_timeout_s,
        max_session_lifetime_s=policy.max_session_lifetime_s,
        max_output_bytes=policy.max_output_bytes,
        created_at=policy.created_at.isoformat(),
        num_keypairs=len(manager_of(request).keypairs_on(policy.name)),
    )


async def list_policies(request: Request) -> Response:
    require_admin(await caller(request))
    policies = manager_of(request).policies.all()
    return JSONResponse({"items": [_policy_info(request, p).model_dump() for p in policies]})


async def create_policy(request: Request) -> Response:
    require_admin(await caller(request))
    req = await body_as(request, ResourcePolicyCreateRequest)
    policy = await manager_of(request).policies.create(req.name, policy_changes(req))
    return JSONResponse(_policy_info(request, policy).model_dump(), status_code=201)


async def update_policy(request: Request) -> Response:
    """Fields given (null included: no limit) change; fields left out keep their value.
    Running sessions keep the limits they were created with."""
    require_admin(await caller(request))
    req = await body_as(request, ResourcePolicyFields)
    policy = await manager_of(request).policies.update(request.path_params["name"], policy_changes(req))
    return JSONResponse(_policy_info(request, policy).model_dump())


async def delete_policy(request: Request) -> Response:
    require_admin(await caller(request))
    await manager_of(request).delete_policy(request.path_params["name"])
    return Response(status_code=204)


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
