"""Keypair administration (admin keypairs only): ``session.Admin``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from bai.client.base import AsyncAPI
from bai.client.models import KeypairList, request_body
from bai.common.wire import AgentList, AgentStatus, KeypairCreated, KeypairCreateRequest, KeypairInfo

if TYPE_CHECKING:
    from bai.client.session import AsyncSession


class AdminAPI(AsyncAPI):
    """``/admin/keypairs``: list, create, (de)activate and delete keypairs; ``/admin/agents``."""

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
    ) -> KeypairCreated:
        """Create a keypair; the answer is the only place its secret key is ever shown."""
        body = request_body(
            KeypairCreateRequest,
            user_id=user_id,
            is_admin=is_admin,
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            expires_at=expires_at,
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


def _path(access_key: str) -> str:
    return f"/admin/keypairs/{quote(access_key, safe='')}"
