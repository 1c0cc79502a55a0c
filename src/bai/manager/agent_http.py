"""``HttpAgentLink``: the manager's client of a remote agent's RPC server
(bai.agent.rpc): ``POST <rpc_url>/rpc/<method>`` with the agent_rpc models, the
cluster secret in ``X-BAI-Cluster-Secret``, one kept-alive connection pool per
agent. Failures come back as ``RpcError`` and are raised again as the same
bai.common.errors class; transport failures become ServiceUnavailable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from bai.common import errors
from bai.common.agent_rpc import (
    AgentInfo,
    ByteStream,
    CompleteRequest,
    ExecRequest,
    ExecResult,
    FileDownload,
    FileListing,
    FileListRequest,
    FileUpload,
    RpcError,
    SandboxSpec,
    SessionRef,
    SessionStats,
)
from bai.common.terminal import Terminal
from bai.manager.agent_terminal import open_remote_terminal
from bai.manager.agents import AgentLink

M = TypeVar("M", bound=BaseModel)
_STRINGS = TypeAdapter(list[str])
#: errors an agent may send back, by class name; anything else is an OperationFailed
_RAISABLE: dict[str, type[errors.BaiError]] = {
    cls.__name__: cls
    for cls in (
        errors.InvalidRequest, errors.NotFound, errors.SessionNotFound, errors.ServiceUnavailable,
        errors.SessionCreationFailed, errors.SessionDestructionFailed, errors.SessionRestartFailed,
        errors.ExecutionFailed, errors.OperationFailed, errors.AuthFailed,
        errors.RequestTooLarge, errors.StorageFull, errors.NotImplementedFeature,
    )
}
SECRET_HEADER = "X-BAI-Cluster-Secret"
ARGS_HEADER = "X-BAI-Args"  # the call's model, for calls whose body is a byte stream


def _error_from(response: httpx.Response) -> errors.BaiError:
    try:
        body = RpcError.model_validate_json(response.content)
    except ValidationError:
        return errors.OperationFailed(f"agent answered {response.status_code}: {response.text[:200]}")
    cls = _RAISABLE.get(body.error, errors.OperationFailed)
    if issubclass(cls, errors.InvalidRequest):
        return cls(body.message, field=body.field, data=body.data)
    return cls(body.message, data=body.data)


class HttpAgentLink(AgentLink):
    def __init__(self, info: AgentInfo, secret: str, *, timeout_s: float = 60.0) -> None:
        self.agent_id = info.agent_id
        self._rpc_url = info.rpc_url
        self._secret = secret
        self._http = httpx.AsyncClient(
            base_url=info.rpc_url.rstrip("/"),
            headers={SECRET_HEADER: secret},
            timeout=httpx.Timeout(timeout_s, connect=5.0),
        )

    async def _call(self, method: str, body: BaseModel) -> httpx.Response:
        try:
            response = await self._http.post(f"/rpc/{method}", content=body.model_dump_json(),
                                             headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise errors.ServiceUnavailable(f"agent {self.agent_id} is unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    async def _model(self, method: str, body: BaseModel, answer: type[M]) -> M:
        response = await self._call(method, body)
        try:
            return answer.model_validate_json(response.content)
        except ValidationError as exc:
            raise errors.OperationFailed(f"agent {self.agent_id} sent a bad {answer.__name__}") from exc

    async def create_session(self, spec: SandboxSpec) -> None:
        await self._call("create_session", spec)

    async def destroy_session(self, session_id: str) -> SessionStats:
        return await self._model("destroy_session", SessionRef(session_id=session_id), SessionStats)

    async def restart_session(self, session_id: str) -> None:
        await self._call("restart_session", SessionRef(session_id=session_id))

    async def execute(self, request: ExecRequest) -> ExecResult:
        return await self._model("execute", request, ExecResult)

    async def interrupt(self, session_id: str) -> None:
        await self._call("interrupt", SessionRef(session_id=session_id))

    async def complete(self, request: CompleteRequest) -> list[str]:
        response = await self._call("complete", request)
        return _STRINGS.validate_json(response.content)

    async def session_stats(self, session_id: str) -> SessionStats:
        return await self._model("session_stats", SessionRef(session_id=session_id), SessionStats)

    async def upload_file(self, request: FileUpload, chunks: AsyncIterator[bytes]) -> None:
        try:
            response = await self._http.post(
                "/rpc/upload_file", content=chunks,
                headers={ARGS_HEADER: request.model_dump_json(), "Content-Type": "application/octet-stream"},
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise errors.ServiceUnavailable(f"agent {self.agent_id} is unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response)

    async def download(self, request: FileDownload) -> ByteStream:
        call = self._http.build_request(
            "POST", "/rpc/download", content=request.model_dump_json(), headers={"Content-Type": "application/json"}
        )
        try:
            response = await self._http.send(call, stream=True)
        except httpx.HTTPError as exc:
            raise errors.ServiceUnavailable(f"agent {self.agent_id} is unreachable: {exc}") from exc
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise _error_from(response)
        media_type = response.headers.get("content-type", "application/octet-stream")
        return ByteStream(media_type=media_type, chunks=self._relay(response))

    async def _relay(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise errors.ServiceUnavailable(f"agent {self.agent_id}: the download broke off: {exc}") from exc
        finally:
            await response.aclose()

    async def list_files(self, request: FileListRequest) -> FileListing:
        return await self._model("list_files", request, FileListing)

    async def open_terminal(self, session_id: str, rows: int, cols: int) -> Terminal:
        """Over the agent's terminal WebSocket (bai.agent.rpc_terminal)."""
        return await open_remote_terminal(
            self._rpc_url, (SECRET_HEADER, self._secret), session_id, rows, cols, self._refusal
        )

    @staticmethod
    def _refusal(status: int, body: bytes) -> errors.BaiError:
        return _error_from(httpx.Response(status, content=body))

    async def close(self) -> None:
        await self._http.aclose()
