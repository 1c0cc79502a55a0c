"""``/admin/resource-policies``: list, create, update and delete resource policies.
Admin only; ``Manager.delete_policy`` refuses "default" and a policy a keypair still uses."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bai.common.resources import format_slots
from bai.common.wire import ResourcePolicyCreateRequest, ResourcePolicyFields, ResourcePolicyInfo
from bai.manager.api.deps import body_as, caller, manager_of, require_admin
from bai.manager.policies import ResourcePolicy, policy_changes


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
