"""Keypair and resource policy administration (admin keypairs only): ``session.Admin``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bai.client.base import AsyncAPI
from bai.client.models import KeypairList, PolicyList, request_body
from bai.common.wire import (
    AgentList,
    AgentStatus,
    KeypairCreated,
    KeypairCreateRequest,
    KeypairInfo,
    KeypairUpdateRequest,
    ResourcePolicyCreateRequest,
    ResourcePolicyFields,
    ResourcePolicyInfo,
)

if TYPE_CHECKING:
    from bai.client.session import AsyncSession


class AdminAPI(AsyncAPI):
    """``/admin/keypairs``: list, create, (de)activate, delete keypairs and set their resource
    policy; ``/admin/resource-policies``: list, create, update and delete policies;
    ``/admin/agents``: list agents."""

    def __init__(self, api: AsyncSession) -> None:
        self._api = api

    async def list_agents(self) -> list[AgentStatus]:
        """The agents the manager knows: capacity, load, warm pool (``GET /admin/agents``)."""
        answer = await self._api.request_model(AgentList, "GET", "/admin/agents")
        return answer.items

    async def list_keypairs(self) -> list[KeypairInfo]:
        answer = await self._api.request_model(KeypairList, "GET", "/admin/keypairs")
        return answer.items

    async def create_keypair(
        self,
        *,
        user_id: str = "user",
        is_admin: bool = False,
        concurrency_limit: int = 30,
        rate_limit: int = 10000,
        expires_at: datetime | None = None,
        resource_policy: str = "default",
    ) -> KeypairCreated:
        """Create a keypair; the answer is the only place its secret key is ever shown."""
        body = request_body(
            KeypairCreateRequest,
            user_id=user_id,
            is_admin=is_admin,
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            expires_at=expires_at,
            resource_policy=resource_policy,
        )
        return await self._api.request_model(
            KeypairCreated, "POST", "/admin/keypairs", json=body.model_dump(mode="json", exclude_none=True)
        )

    async def deactivate_keypair(self, access_key: str) -> KeypairInfo:
        return await self._api.request_model(KeypairInfo, "POST", f"{_path(access_key)}/deactivate")

    async def activate_keypair(self, access_key: str) -> KeypairInfo:
        return await self._api.request_model(KeypairInfo, "POST", f"{_path(access_key)}/activate")

    async def delete_keypair(self, access_key: str) -> None:
        await self._api.request("DELETE", _path(access_key))

    async def set_keypair_policy(self, access_key: str, policy: str) -> KeypairInfo:
        """Move a keypair to another resource policy; its running sessions keep their limits."""
        body = request_body(KeypairUpdateRequest, resource_policy=policy)
        return await self._api.request_model(KeypairInfo, "PATCH", _path(access_key), json=body.model_dump())

    async def list_policies(self) -> list[ResourcePolicyInfo]:
        answer = await self._api.request_model(PolicyList, "GET", "/admin/resource-policies")
        return answer.items

    async def create_policy(self, name: str, **limits: Any) -> ResourcePolicyInfo:
        """Create a resource policy. ``limits`` are ResourcePolicyFields' names
        (``idle_timeout_s=600``, ``max_session_slots={"cpu": 2, "mem": "4g"}``...); left out: no limit."""
        body = request_body(ResourcePolicyCreateRequest, name=name, **limits)
        return await self._api.request_model(
            ResourcePolicyInfo, "POST", "/admin/resource-policies", json=body.model_dump(exclude_unset=True)
        )

    async def update_policy(self, name: str, **changes: Any) -> ResourcePolicyInfo:
        """Change the fields given (None: no limit); the others keep their value."""
        body = request_body(ResourcePolicyFields, **changes)
        return await self._api.request_model(
            ResourcePolicyInfo, "PATCH", _policy_path(name), json=body.model_dump(exclude_unset=True)
        )

    async def delete_policy(self, name: str) -> None:
        """Delete a policy; the server refuses while a keypair uses it."""
        await self._api.request("DELETE", _policy_path(name))


def _path(access_key: str) -> str:
    return f"/admin/keypairs/{quote(access_key, safe='')}"


def _policy_path(name: str) -> str:
    return f"/admin/resource-policies/{quote(name, safe='')}"
