"""``HttpAgentClient``: the manager's client of an agent in another process, over the
agent RPC (bai.agent.rpc serves it). How each kind of call travels is in
bai.common.agent_calls; here each kind is written once, for every call of that kind.

One kept-alive connection pool per agent; every request carries the cluster secret
(``cluster_secret_headers``, the only place that builds the header). A failure comes
back as ``RpcError`` and is raised again as its class when the call declares it, else as
an OperationFailed that names it. An agent that refuses the secret, cannot be reached or
breaks off a download is ServiceUnavailable: what the user's request met is an agent
that cannot take it, not a failed signature of theirs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, ValidationError

from bai.common import errors
from bai.common.agent_calls import ARGS_HEADER, SECRET_HEADER, AgentCall, Call, Download, Upload, WebSocketCall
from bai.common.agent_rpc import AgentInfo, ByteStream, RpcError
from bai.common.terminal import Terminal
from bai.manager.agent_client import AgentClient
from bai.manager.agent_terminal import open_remote_terminal

Req = TypeVar("Req", bound=BaseModel)
Ans = TypeVar("Ans")

JSON = {"Content-Type": "application/json"}


def cluster_secret_headers(secret: str) -> dict[str, str]:
    """The header that admits the manager to an agent's RPC (checked by bai.agent.rpc)."""
    return {SECRET_HEADER: secret}


class HttpAgentClient(AgentClient):
    def __init__(
        self,
        info: AgentInfo,
        secret: str,
        *,
        timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport``: where requests go instead of the network (tests serve the agent's
        app in process with ``httpx.ASGITransport``)."""
        self.agent_id = info.agent_id
        self._rpc_url = info.rpc_url.rstrip("/")
        self._headers = cluster_secret_headers(secret)
        self._http = httpx.AsyncClient(
            base_url=self._rpc_url,
            headers=self._headers,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            transport=transport,
        )

    async def send_call(self, call: Call[Req, Ans], request: Req) -> Ans:
        built = self._http.build_request("POST", call.path, content=_json(request), headers=JSON)
        response = await self._send(call, built)
        try:
            if response.status_code == 204:
                return call.answer.validate_python(None)
            return call.answer.validate_json(response.content)
        except ValidationError as exc:
            raise errors.OperationFailed(f"agent {self.agent_id} sent a bad answer to {call.name}") from exc

    async def send_upload(self, call: Upload[Req], request: Req, chunks: AsyncIterator[bytes]) -> None:
        headers = {ARGS_HEADER: _json(request), "Content-Type": "application/octet-stream"}
        await self._send(call, self._http.build_request("POST", call.path, content=chunks, headers=headers))

    async def send_download(self, call: Download[Req], request: Req) -> ByteStream:
        built = self._http.build_request("POST", call.path, content=_json(request), headers=JSON)
        response = await self._send(call, built, stream=True)
        media_type = response.headers.get("content-type", "application/octet-stream")
        return ByteStream(media_type=media_type, chunks=self._relay(response))

    async def open_websocket(self, call: WebSocketCall[Req], request: Req) -> Terminal:
        """Over the agent's terminal WebSocket (bai.agent.rpc_terminal has the frames)."""
        url = "ws" + self._rpc_url.removeprefix("http") + call.path + "?" + urlencode(request.model_dump())

        def refusal(status: int, body: bytes) -> errors.BaiError:
            return self._error(call, status, body)

        return await open_remote_terminal(url, self._headers, refusal)

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(
        self, call: AgentCall[BaseModel], request: httpx.Request, *, stream: bool = False
    ) -> httpx.Response:
        """The answer of a call that succeeded; a failed one raised as its error."""
        try:
            response = await self._http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise errors.ServiceUnavailable(f"agent {self.agent_id} is unreachable: {exc}") from exc
        if response.status_code >= 400:
            if stream:
                await response.aread()
                await response.aclose()
            raise self._error(call, response.status_code, response.content)
        return response

    def _error(self, call: AgentCall[BaseModel], status: int, body: bytes) -> errors.BaiError:
        try:
            answer = RpcError.model_validate_json(body)
        except ValidationError:
            shown = body[:200].decode(errors="replace")
            return errors.OperationFailed(f"agent {self.agent_id} answered {call.name} with {status}: {shown}")
        error = call.error_from(answer)
        if isinstance(error, errors.AuthFailed):
            return errors.ServiceUnavailable(f"agent {self.agent_id} refuses this manager's cluster secret")
        return error

    async def _relay(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise errors.ServiceUnavailable(f"agent {self.agent_id}: the download broke off: {exc}") from exc
        finally:
            await response.aclose()


def _json(request: BaseModel) -> str:
    return request.model_dump_json()
