"""Session files on the client side (API.md section 5): the streamed multipart
upload body, the incremental reader of the ``multipart/mixed`` download, and safe
extraction of the tars it holds.

Extraction is member by member with tarfile's ``data`` filter: a member with an
absolute path or ``..``, a link pointing outside the destination, a device or a
fifo is skipped and reported, never written; what the session sends is as
untrusted as the session. Callers: ``AsyncComputeSession.upload`` / ``download``
(bai.client.compute) and the CLI's ``bai upload`` / ``bai download``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

from bai.client.errors import ProtocolError

CHUNK = 1 << 20
#: called with the number of bytes just sent or received
Progress = Callable[[int], None]


@dataclass(frozen=True)
class UploadItem:
    local: Path
    remote: str  # the path below /home/work, "/"-separated
    size: int


def upload_items(files: Sequence[str | Path], basedir: str | Path | None) -> list[UploadItem]:
    """Each local file with its path below /home/work: relative to ``basedir`` (default:
    the current directory). A directory or a file outside ``basedir`` is a ValueError."""
    base = Path.cwd() if basedir is None else Path(basedir).resolve()
    items = []
    for name in files:
        local = Path(name).resolve()
        if not local.is_file():
            raise ValueError(f"{name}: not a regular file")
        try:
            remote = local.relative_to(base).as_posix()
        except ValueError:
            raise ValueError(f"{name}: not inside the base directory {base}") from None
        items.append(UploadItem(local, remote, local.stat().st_size))
    return items


def _part_head(boundary: str, remote: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="src"; filename="{quote(remote, safe="")}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


class MultipartUpload:
    """The body of one upload, streamed from the files; ``length`` is known up front."""

    def __init__(self, items: list[UploadItem], progress: Progress | None = None) -> None:
        self.items = items
        self.boundary = secrets.token_hex(16)
        self.progress = progress
        self.length = sum(len(_part_head(self.boundary, i.remote)) + i.size + 2 for i in items)
        self.length += len(self._tail())

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    async def chunks(self) -> AsyncIterator[bytes]:
        for item in self.items:
            yield _part_head(self.boundary, item.remote)
            with item.local.open("rb") as handle:
                left = item.size  # what Content-Length promised, even if the file changes
                while left > 0:
                    data = await asyncio.to_thread(handle.read, min(CHUNK, left))
                    if not data:
                        raise ValueError(f"{item.local}: the file shrank while it was uploaded")
                    left -= len(data)
                    if self.progress is not None:
                        self.progress(len(data))
                    yield data
            yield b"\r\n"
        yield self._tail()


@dataclass
class Extracted:
    """What a download wrote under its destination, and what it refused to write."""

    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: why"


def boundary_of(content_type: str) -> bytes:
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "multipart/mixed":
        raise ProtocolError(f"a download answered {media.strip()!r}, not multipart/mixed")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode()
    raise ProtocolError("a download answered multipart/mixed with no boundary")


async def split_parts(chunks: AsyncIterator[bytes], boundary: bytes) -> AsyncIterator[IO[bytes]]:
    """Each part's content of a ``multipart/mixed`` stream, spooled to a temporary file
    (rewound; the caller closes it), as soon as the part ends."""
    delimiter = b"\r\n--" + boundary
    buffer = b"\r\n"  # the first delimiter has no CRLF before it
    part: IO[bytes] | None = None
    in_headers = False
    async for chunk in chunks:
        buffer += chunk
        while True:
            if in_headers:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    break
                buffer, in_headers = buffer[end + 4 :], False
                part = tempfile.TemporaryFile()  # noqa: SIM115 (handed to the caller, who closes it)
                continue
            found = buffer.find(delimiter)
            if found < 0:
                keep = len(delimiter) + 2
                if part is not None and len(buffer) > keep:
                    part.write(buffer[:-keep])
                    buffer = buffer[-keep:]
                break
            if len(buffer) < found + len(delimiter) + 2:
                break  # need the two bytes after the delimiter
            if part is not None:
                part.write(buffer[:found])
                part.seek(0)
                yield part
                part = None
            after = buffer[found + len(delimiter) : found + len(delimiter) + 2]
            buffer = buffer[found + len(delimiter) + 2 :]
            if after == b"--":
                return
            in_headers = True
    raise ProtocolError("the download ended in the middle of a part")


def extract(archive: IO[bytes], dest: Path, result: Extracted) -> None:
    """Write the tar's members under ``dest`` through the ``data`` filter."""
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        for member in tar:
            try:
                tar.extract(member, dest, filter="data")
            except (tarfile.FilterError, OSError) as exc:
                result.skipped.append(f"{member.name}: {exc}")
            else:
                result.files.append(member.name)


async def receive(chunks: AsyncIterator[bytes], content_type: str, dest: Path,
                  progress: Progress | None = None) -> Extracted:  # fmt: skip
    await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
    result = Extracted()

    async def counted() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if progress is not None:
                progress(len(chunk))
            yield chunk

    async for part in split_parts(counted(), boundary_of(content_type)):
        with part:
            try:
                await asyncio.to_thread(extract, part, dest, result)
            except tarfile.TarError as exc:
                raise ProtocolError(f"a download held a broken tar: {exc}") from exc
    return result


def local_size(paths: Sequence[str | Path]) -> int:
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
