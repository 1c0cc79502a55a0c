"""Session files (API.md section 5): ``POST /session/{id}/upload``,
``POST|GET /session/{id}/download``, ``GET /session/{id}/files``.

Every path is checked here (bai.common.workpaths: relative, no ``..``, no NUL)
before any agent call; a bad one is a 400 naming it. Links, fifos and the like
are the agent's to refuse (bai.agent.files), as an InvalidRequest naming the path.

An upload is ``multipart/form-data``, one part named ``src`` per file, its
filename the path below /home/work, percent-encoded or not (it is decoded,
then checked). The body is parsed as it arrives (starlette's
parser; a file past 1 MiB spools to a temporary file, never held in memory), and
the limits (ManagerConfig ``upload_max_*``: files per request, bytes per file,
bytes per request) stop it the moment they are passed, with a 413 naming the
field. Then each file is streamed to the agent in chunks. Downloads are relayed
from the agent as it writes them (``multipart/mixed``, one tar per path).

The official client sends download and listing as GET with a JSON body
(``{"files": [...]}``, ``{"path": ...}``); API.md's form is query parameters;
both are read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import unquote

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from bai.common.agent_rpc import FileDownload, FileListRequest, FileUpload
from bai.common.errors import InvalidRequest, RequestTooLarge
from bai.common.workpaths import WORK_DIR, WorkPathError, work_path
from bai.manager.api.deps import json_body, live_session, manager_of
from bai.manager.config import ManagerConfig
from bai.manager.sessions import LiveSession, SessionRegistry

CHUNK = 1 << 20


def checked_path(raw: Any, field: str, *, allow_absolute: bool, allow_root: bool = False) -> str:
    if not isinstance(raw, str):
        raise InvalidRequest(f"{field}: a path is a string, not {type(raw).__name__}", field=field)
    try:
        return work_path(raw, allow_absolute=allow_absolute, allow_root=allow_root)
    except WorkPathError as exc:
        raise InvalidRequest(f"{field}: {exc}", field=field) from None


class _UploadParser(MultiPartParser):
    """starlette's parser with our rules applied as each part's headers and bytes arrive."""

    def __init__(self, headers: Headers, stream: AsyncGenerator[bytes, None], config: ManagerConfig) -> None:
        super().__init__(headers, stream, max_files=float("inf"), max_fields=float("inf"))
        self.config = config
        self.paths: list[str] = []
        self._part_bytes = 0

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        part = self._current_part
        if part.field_name != "src":
            name = part.field_name
            raise InvalidRequest(f"{name}: every part of an upload is named 'src'", field=name or "src")
        if part.file is None or part.file.filename is None:
            raise InvalidRequest(
                "src: a part without a filename (the filename is the path below /home/work)", field="src"
            )
        if len(self.paths) >= self.config.upload_max_files:
            limit = self.config.upload_max_files
            raise RequestTooLarge(f"src: more than {limit} files in one upload, the limit", field="src")
        try:  # clients percent-encode the filename (aiohttp, the official client's, does)
            filename = unquote(part.file.filename, errors="strict")
        except UnicodeDecodeError:
            raise InvalidRequest(f"src: {part.file.filename!r} is not UTF-8 once decoded", field="src") from None
        self.paths.append(checked_path(filename, "src", allow_absolute=False))
        self._part_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self._part_bytes += end - start
            limit = self.config.upload_max_file_bytes
            if self._part_bytes > limit:
                raise RequestTooLarge(
                    f"src: {self.paths[-1]!r} is larger than {limit} bytes, the limit per file", field="src"
                )
        super().on_part_data(data, start, end)


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise RequestTooLarge(f"body: the upload is larger than {limit} bytes, the limit per request", field="body")
        yield chunk


async def _file_chunks(file: UploadFile) -> AsyncIterator[bytes]:
    await file.seek(0)
    while chunk := await file.read(CHUNK):
        yield chunk


async def _parse_upload(request: Request, config: ManagerConfig) -> list[tuple[str, UploadFile]]:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidRequest("body: an upload is multipart/form-data, one part named 'src' per file", field="body")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > config.upload_max_request_bytes:
        limit = config.upload_max_request_bytes
        raise RequestTooLarge(f"body: the upload is larger than {limit} bytes, the limit per request", field="body")
    parser = _UploadParser(request.headers, _limited(request.stream(), config.upload_max_request_bytes), config)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"body: {exc.message}", field="body") from None
    files = [item for _name, item in form.multi_items() if isinstance(item, UploadFile)]
    return list(zip(parser.paths, files, strict=True))


async def upload(request: Request) -> Response:
    session = await live_session(request)
    manager = manager_of(request)
    config = manager.config
    agent = manager.sessions.agent_of(session)
    uploads = await _parse_upload(request, config)
    try:
        if not uploads:
            raise InvalidRequest("src: the upload holds no file", field="src")
        with manager.sessions.in_use(session):
            for path, file in uploads:
                ref = FileUpload(session_id=session.id, path=path, max_bytes=config.upload_max_file_bytes)
                await agent.upload_file(ref, _file_chunks(file))
    finally:
        for _path, file in uploads:
            await file.close()
    return Response(status_code=204)


async def _params(request: Request, name: str) -> list[Any]:
    """A parameter's values from the query string, else from a JSON body."""
    values: list[Any] = request.query_params.getlist(name)
    if values:
        return values
    body = await json_body(request, required=False)
    value = body.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


async def _relay(sessions: SessionRegistry, session: LiveSession, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    with sessions.in_use(session):
        async for chunk in chunks:
            yield chunk


async def download(request: Request) -> Response:
    session = await live_session(request)
    manager = manager_of(request)
    config = manager.config
    raw = await _params(request, "files")
    if not raw:
        raise InvalidRequest("files: name at least one file to download", field="files")
    if len(raw) > config.download_max_files:
        raise RequestTooLarge(f"files: more than {config.download_max_files} files, the limit", field="files")
    paths = [checked_path(item, "files", allow_absolute=True) for item in raw]
    agent = manager.sessions.agent_of(session)
    stream = await agent.download(FileDownload(session_id=session.id, paths=paths, max_bytes=config.download_max_bytes))
    return StreamingResponse(_relay(manager.sessions, session, stream.chunks), media_type=stream.media_type)


async def list_files(request: Request) -> Response:
    session = await live_session(request)
    manager = manager_of(request)
    raw = await _params(request, "path")
    if len(raw) > 1:
        raise InvalidRequest("path: name one directory", field="path")
    path = checked_path(raw[0] if raw else "", "path", allow_absolute=True, allow_root=True)
    agent = manager.sessions.agent_of(session)
    request_ = FileListRequest(session_id=session.id, path=path, max_entries=manager.config.list_max_entries)
    listing = await agent.list_files(request_)
    folder = f"{WORK_DIR}/{path}" if path else WORK_DIR
    entries = [entry.model_dump() for entry in listing.entries]
    return JSONResponse(
        {
            "files": json.dumps(entries),
            "folder_path": folder,
            "abspath": folder,
            "errors": "",
            "truncated": listing.truncated,
        }
    )
