"""Downloads from a session's /home/work: ``multipart/mixed``, one tar per path.

The paths are opened (bai.agent.files rules: below the scratch root, no link
followed) and measured before the answer starts, so a refused path or a request
over the size limit is a clean error; the tars are then written from those fds
by a worker thread and streamed to the caller with back-pressure (a few chunks
in flight). Inside a directory, links are stored as links (``readlinkat``),
never followed; fifos, sockets and device files are skipped, never opened
(a fifo would block a reader); a directory on another file system is skipped.
The files may change while they are sent: a file is sent at the size its tar
header says (cut, or padded with zeros), and the stream stops with
RequestTooLarge if the tree grew past the limit meanwhile.

Caller: ``Agent.download`` (bai.agent.agent).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import stat
import tarfile
import threading
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

from bai.agent.files import DIR_FLAGS, READ_FLAGS, WorkDir, checked, open_beneath, open_root, refusal
from bai.common.agent_rpc import ByteStream
from bai.common.errors import InvalidRequest, RequestTooLarge

CHUNK = 256 * 1024
IN_FLIGHT = 4
MAX_DEPTH = 64
Item = bytes | BaseException | None


@dataclass
class _Source:
    path: str
    fd: int
    is_dir: bool


class _ReaderGone(Exception):
    """The consumer stopped reading (the client went away)."""


class _Pipe:
    """Chunks from the writer thread to the event loop, at most IN_FLIGHT queued."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Item] = asyncio.Queue(IN_FLIGHT)
        self.gone = threading.Event()

    def put(self, item: Item) -> None:
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                future.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                if self.gone.is_set():
                    future.cancel()
                    raise _ReaderGone() from None


class _Sink:
    """The file object tarfile writes to: buffers into CHUNK-sized pieces for the pipe."""

    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.pipe.put(bytes(self.buffer))
            self.buffer = bytearray()


class _Exactly:
    """Reads ``size`` bytes of an fd: zeros past its end if it shrank, nothing past
    ``size`` if it grew (the tar header already holds the size)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.left = size

    def read(self, size: int = -1) -> bytes:
        want = self.left if size < 0 else min(size, self.left)
        data = b""
        while len(data) < want:
            piece = os.read(self.fd, want - len(data))
            if not piece:
                data += bytes(want - len(data))
                break
            data += piece
        self.left -= len(data)
        return data


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int, path: str) -> None:
        self.used += size
        if self.used > self.limit:
            raise RequestTooLarge(
                f"files: {path!r}: the download is larger than {self.limit} bytes, the limit", field="files"
            )


def _header(name: str, kind: bytes, info: os.stat_result) -> tarfile.TarInfo:
    header = tarfile.TarInfo(name)
    header.type = kind
    header.mode = stat.S_IMODE(info.st_mode) & 0o777
    header.mtime = int(info.st_mtime)
    header.size = info.st_size if kind == tarfile.REGTYPE else 0
    return header


def _tree_size(dir_fd: int, budget: _Budget, path: str, depth: int = 0) -> None:
    """Count the regular files' sizes below ``dir_fd`` into ``budget`` (lstat, no open
    but of subdirectories, each below its parent and following no link)."""
    device = os.fstat(dir_fd).st_dev
    for name in os.listdir(dir_fd):
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode):
            budget.take(info.st_size, path)
        elif stat.S_ISDIR(info.st_mode) and depth < MAX_DEPTH and info.st_dev == device:
            try:
                child = open_beneath(dir_fd, name, DIR_FLAGS)
            except OSError:
                continue
            try:
                _tree_size(child, budget, path, depth + 1)
            finally:
                os.close(child)


def _add_file(tar: tarfile.TarFile, name: str, fd: int, budget: _Budget, path: str) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        return
    budget.take(info.st_size, path)
    tar.addfile(_header(name, tarfile.REGTYPE, info), _Exactly(fd, info.st_size))


def _add_entry(tar: tarfile.TarFile, dir_fd: int, name: str, arcname: str, depth: int,
               budget: _Budget, path: str) -> None:  # fmt: skip
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        header = _header(arcname, tarfile.SYMTYPE, info)
        header.linkname = os.readlink(name, dir_fd=dir_fd)
        tar.addfile(header)
        return
    if stat.S_ISDIR(info.st_mode):
        if depth >= MAX_DEPTH or info.st_dev != os.fstat(dir_fd).st_dev:
            return
        flags = DIR_FLAGS
    elif stat.S_ISREG(info.st_mode):
        flags = READ_FLAGS
    else:
        return  # fifo, socket, device: never opened
    fd = open_beneath(dir_fd, name, flags)
    try:
        if stat.S_ISDIR(info.st_mode):
            _add_tree(tar, fd, arcname, depth + 1, budget, path)
        else:
            _add_file(tar, arcname, fd, budget, path)
    finally:
        os.close(fd)


def _add_tree(tar: tarfile.TarFile, dir_fd: int, arcname: str, depth: int, budget: _Budget, path: str) -> None:
    tar.addfile(_header(arcname, tarfile.DIRTYPE, os.fstat(dir_fd)))
    for name in sorted(os.listdir(dir_fd)):
        try:
            _add_entry(tar, dir_fd, name, f"{arcname}/{name}", depth, budget, path)
        except OSError:
            continue  # removed or replaced meanwhile: skipped, never followed


def _part_header(boundary: str, source: _Source) -> bytes:
    name = quote(source.path.rsplit("/", 1)[-1] + ".tar")
    return (
        f'--{boundary}\r\nContent-Type: application/x-tar\r\nContent-Disposition: attachment; filename="{name}"\r\n\r\n'
    ).encode()


def _produce(pipe: _Pipe, sources: list[_Source], boundary: str, budget: _Budget) -> None:
    """The writer thread: the whole multipart body into ``pipe``, then None (or the
    error that stopped it). Closes the sources' fds."""
    try:
        sink = _Sink(pipe)
        for source in sources:
            sink.write(_part_header(boundary, source))
            arcname = source.path.rsplit("/", 1)[-1]
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                if source.is_dir:
                    _add_tree(tar, source.fd, arcname, 0, budget, source.path)
                else:
                    _add_file(tar, arcname, source.fd, budget, source.path)
            sink.write(b"\r\n")
        sink.write(f"--{boundary}--\r\n".encode())
        sink.flush()
        pipe.put(None)
    except _ReaderGone:
        pass
    except BaseException as exc:
        with contextlib.suppress(_ReaderGone):
            pipe.put(exc)
    finally:
        for source in sources:
            os.close(source.fd)


def _close_unsent(sources: list[_Source], started: list[bool]) -> None:
    """A stream dropped before its first chunk was asked for: no writer thread ever
    owned the fds, so close them here (``weakref.finalize`` on the stream)."""
    if not started:
        for source in sources:
            os.close(source.fd)


async def _stream(sources: list[_Source], boundary: str, budget: _Budget, started: list[bool]) -> AsyncIterator[bytes]:
    started.append(True)
    pipe = _Pipe(asyncio.get_running_loop())
    writer = asyncio.ensure_future(asyncio.to_thread(_produce, pipe, sources, boundary, budget))
    try:
        while True:
            item = await pipe.queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        pipe.gone.set()
        while not pipe.queue.empty():  # unblock a writer waiting on a full queue
            pipe.queue.get_nowait()
        writer.add_done_callback(lambda done: done.cancelled() or done.exception())


def open_sources(work: WorkDir, paths: list[str], budget: _Budget) -> list[_Source]:
    """Open each path below the root (regular files and directories only) and
    measure them against ``budget``. Closes what it opened when it fails."""
    root = open_root(work)
    sources: list[_Source] = []
    try:
        for path in paths:
            try:
                fd = open_beneath(root, path, READ_FLAGS)
            except OSError as exc:
                raise refusal(path, exc, "files") from exc
            info = os.fstat(fd)
            sources.append(_Source(path, fd, stat.S_ISDIR(info.st_mode)))
            if stat.S_ISREG(info.st_mode):
                budget.take(info.st_size, path)
            elif stat.S_ISDIR(info.st_mode):
                _tree_size(fd, budget, path)
            else:
                raise InvalidRequest(f"files: {path!r} is not a regular file or a directory", field="files")
    except BaseException:
        for source in sources:
            os.close(source.fd)
        raise
    finally:
        os.close(root)
    budget.used = 0  # measured; the writer counts again what it actually sends
    return sources


async def download(work: WorkDir, raw_paths: list[str], max_bytes: int) -> ByteStream:
    """The ``multipart/mixed`` body of one tar per path; errors in the paths are raised
    here, before the first byte."""
    if not raw_paths:
        raise InvalidRequest("files: name at least one file", field="files")
    paths = [checked(raw, "files") for raw in raw_paths]
    budget = _Budget(max_bytes)
    sources = await asyncio.to_thread(open_sources, work, paths, budget)
    boundary = secrets.token_hex(16)
    started: list[bool] = []
    chunks = _stream(sources, boundary, budget, started)
    weakref.finalize(chunks, _close_unsent, sources, started)
    return ByteStream(media_type=f"multipart/mixed; boundary={boundary}", chunks=chunks)
