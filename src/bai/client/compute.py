"""Compute sessions: ``session.ComputeSession`` and the objects it gives (API.md sections 5 and 6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from pydantic.alias_generators import to_camel

from bai.client import files as transfer
from bai.client import runs
from bai.client.base import AsyncAPI
from bai.client.models import (
    CompleteAnswer,
    CompletionResult,
    DestroyAnswer,
    ExecuteAnswer,
    FileList,
    SessionStats,
    request_body,
)
from bai.client.stream import ExecutionStream, TerminalStream
from bai.common.limits import SessionLimits
from bai.common.wire import (
    CompleteOptions,
    CreateSessionRequest,
    CreateSessionResponse,
    ExecMode,
    ExecuteRequest,
    RunResult,
    SessionConfig,
    SessionInfo,
)

if TYPE_CHECKING:
    from bai.client.session import AsyncSession

ResourceValue = str | int | float


class AsyncComputeSession(AsyncAPI):
    """One compute session, addressed by its UUID when known, else by its name.

    Building one does no I/O: ``api.ComputeSession("demo")`` only names it; the
    first call that needs it finds out whether it exists (SessionNotFound).
    """

    def __init__(
        self,
        api: AsyncSession,
        name_or_id: str,
        *,
        session_id: str | None = None,
        status: str | None = None,
        created: bool | None = None,
    ) -> None:
        self._api = api
        self.name = name_or_id
        self.id = session_id
        #: The status the last answer reported (create or info).
        self.status = status
        #: Whether get_or_create made a new session (False: an existing one was reused).
        self.created = created

    def __repr__(self) -> str:
        return f"<ComputeSession {self.name} id={self.id} status={self.status}>"

    @property
    def path(self) -> str:
        return f"/session/{quote(self.id or self.name, safe='')}"

    async def info(self) -> SessionInfo:
        info = await self._api.request_model(SessionInfo, "GET", self.path)
        self.id, self.name, self.status = info.sessionId, info.sessionName, info.status
        return info

    async def execute(
        self,
        run_id: str | None = None,
        code: str = "",
        mode: ExecMode = "query",
        opts: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """One execute call (API.md section 6); returns the ``result``.

        A ``continued`` result asks for another call with ``mode="continue"``
        and the same run id; ``waiting-input`` for ``mode="input"`` with the text.
        """
        body = request_body(ExecuteRequest, mode=mode, run_id=run_id, code=code, options=dict(opts or {}))
        answer = await self._api.request_model(ExecuteAnswer, "POST", self.path, json=_camel(body, keep_none=True))
        return answer.result

    async def run(
        self,
        code: str = "",
        *,
        mode: Literal["query", "batch"] = "query",
        opts: Mapping[str, Any] | None = None,
        stdin: runs.Stdin | None = None,
        on_output: runs.OutputCallback | None = None,
    ) -> runs.RunOutput:
        """Run ``code`` to its end and return all of it (bai.client.runs): the console
        items, ``stdout``/``stderr`` joined, the exit code and what the run used.

        ``stdin``: the lines the run reads (a string, a line per request, or a callable
        asked with the prompt); without it a request for input is answered an empty line.
        ``on_output(kind, data)`` sees each console item as it arrives. Batch mode takes
        its steps in ``opts`` (``build``, ``exec``, ``clean``), as ``execute`` does."""
        options = dict(opts or {})

        async def call(run_id: str | None, text: str, call_mode: ExecMode) -> RunResult:
            return await self.execute(run_id, text, call_mode, options if call_mode in ("query", "batch") else None)

        return await runs.collect(call, self.interrupt, code, mode, stdin=stdin, on_output=on_output)

    def stream_execute(
        self, code: str = "", mode: Literal["query", "batch"] = "query", opts: Mapping[str, Any] | None = None
    ) -> ExecutionStream:
        """A run over the execute WebSocket: ``async with ... as stream: async for frame in stream``."""
        return ExecutionStream(self._api, f"/stream{self.path}/execute", code, mode, dict(opts or {}))

    def terminal(self, rows: int = 24, cols: int = 80) -> TerminalStream:
        """An interactive shell in the session: ``async with ... as term`` (bai.client.stream)."""
        return TerminalStream(self._api, f"/stream{self.path}/pty?rows={int(rows)}&cols={int(cols)}")

    async def interrupt(self) -> None:
        await self._api.request("POST", f"{self.path}/interrupt")

    async def complete(self, code: str, opts: Mapping[str, Any] | None = None) -> CompletionResult:
        options = request_body(CompleteOptions, **dict(opts or {}))
        body = {"code": code, "options": options.model_dump()}
        answer = await self._api.request_model(CompleteAnswer, "POST", f"{self.path}/complete", json=body)
        return answer.result

    async def restart(self) -> None:
        await self._api.request("PATCH", self.path)

    async def upload(
        self, files: Sequence[str | Path], basedir: str | Path | None = None, *,
        progress: transfer.Progress | None = None,
    ) -> list[str]:  # fmt: skip
        """``POST {path}/upload``: local files into the session's /home/work, each at its
        path relative to ``basedir`` (default: the current directory); returns those paths.
        The body is streamed from the files; ``progress`` is called with each chunk's size."""
        items = transfer.upload_items(files, basedir)
        body = transfer.MultipartUpload(items, progress)
        headers = {"Content-Type": body.content_type, "Content-Length": str(body.length)}
        request = self._api.build_request("POST", f"{self.path}/upload", content=body.chunks(), headers=headers)
        await self._api.send(request)
        return [item.remote for item in items]

    async def download(
        self, files: Sequence[str], dest: str | Path = ".", *, progress: transfer.Progress | None = None
    ) -> transfer.Extracted:
        """``POST {path}/download``: files and directories of /home/work, extracted under
        ``dest``. Members that would land outside ``dest`` (absolute, ``..``, links out),
        devices and fifos are skipped and listed in ``skipped``, never written."""
        request = self._api.build_request("POST", f"{self.path}/download", params={"files": list(files)})
        response = await self._api.send(request, stream=True)
        try:
            content_type = response.headers.get("content-type", "")
            return await transfer.receive(response.aiter_bytes(), content_type, Path(dest), progress)
        finally:
            await response.aclose()

    async def list_files(self, path: str = ".") -> FileList:
        """``GET {path}/files``: the entries of a directory below /home/work (links described,
        not followed)."""
        return await self._api.request_model(FileList, "GET", f"{self.path}/files", params={"path": path})

    async def destroy(self) -> SessionStats:
        """Terminate the session; returns its final usage statistics."""
        answer = await self._api.request_model(DestroyAnswer, "DELETE", self.path)
        self.status = "TERMINATED"
        return answer.stats


class ComputeSessionFactory(AsyncAPI):
    """``api.ComputeSession``: call it with a name or UUID, or ``get_or_create`` a session."""

    def __init__(self, api: AsyncSession) -> None:
        self._api = api

    def __call__(self, name_or_id: str) -> AsyncComputeSession:
        return AsyncComputeSession(self._api, name_or_id)

    async def get_or_create(
        self,
        image: str,
        *,
        name: str | None = None,
        type_: Literal["interactive", "batch"] = "interactive",
        enqueue_only: bool = False,
        max_wait: int = 0,
        no_reuse: bool = False,
        envs: Mapping[str, str] | None = None,
        resources: Mapping[str, ResourceValue] | None = None,
        tag: str | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> AsyncComputeSession:
        """``POST /session``: create a session, or reuse the caller's session of that name.

        Returns once it runs, unless ``enqueue_only``; ``max_wait`` seconds
        (0: forever) bound the wait. A name without a session of that name
        creates one; with ``no_reuse`` an existing one is SessionAlreadyExists.
        ``limits`` (``pids``, ``scratch``, ``exec_timeout``, ``idle_timeout``, ``max_lifetime``,
        ``output``) tighten the keypair's resource policy for this session.
        """
        body = request_body(
            CreateSessionRequest,
            name=name,
            image=image,
            type=type_,
            tag=tag,
            group=self._api.config.group,
            domain=self._api.config.domain,
            enqueue_only=enqueue_only,
            max_wait_seconds=max_wait,
            reuse_if_exists=not no_reuse,
            config=SessionConfig(
                resources=dict(resources) if resources else None,
                environ=dict(envs) if envs else None,
                limits=request_body(SessionLimits, **limits) if limits else None,
            ),
        )
        answer = await self._api.request_model(CreateSessionResponse, "POST", "/session", json=_camel(body))
        return AsyncComputeSession(
            self._api,
            answer.sessionName,
            session_id=answer.sessionId,
            status=answer.status,
            created=answer.created,
        )


def _camel(body: CreateSessionRequest | ExecuteRequest, *, keep_none: bool = False) -> dict[str, Any]:
    """The request's top-level keys in the wire's camelCase (``enqueueOnly``, ``runId``...)."""
    fields = body.model_dump(mode="json", exclude_none=not keep_none)
    return {to_camel(key): value for key, value in fields.items()}
