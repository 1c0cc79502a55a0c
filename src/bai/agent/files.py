"""Host-side access to a session's /home/work: path resolution, uploads, listings.

The threat: the agent runs as root and the sandbox owns everything under
/home/work. Hostile code plants symlinks (to /etc/passwd, /root, another
session's scratch dir), swaps a directory for a link between our check and our
use, or leaves fifos and special files where we expect a file. Judge0 was
escaped exactly this way (CVE-2024-28185: a symlink at a name the host then
wrote; CVE-2024-28189: ``chown`` following a planted link). So here:

- every path is first checked lexically (bai.common.workpaths), then resolved
  from an fd on the scratch root with ``openat2(RESOLVE_BENEATH |
  RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)``; where the
  kernel has no openat2 (Linux < 5.6, or a seccomp filter refusing it), one
  component at a time with ``O_NOFOLLOW`` and a device check. No link the
  sandbox made is ever followed, and no name is used twice: the work happens
  on the fds;
- files are opened ``O_NONBLOCK`` (a fifo cannot block us) and checked with
  ``fstat``: only regular files and directories are read;
- an upload is written to a fresh temporary name (``O_EXCL``) in its target
  directory, given to the sandbox's uid with ``fchown`` on its fd, and renamed
  over the target (``renameat`` replaces a name, it never follows a link); a
  link, a directory or a special file at the target is refused, not replaced.

Everything blocking runs in worker threads. Callers: ``Agent.upload_file``,
``Agent.list_files`` (bai.agent.agent) and bai.agent.downloads.
Errors (bai.common.errors): InvalidRequest naming the path (a link on the way,
not a directory...), NotFound, RequestTooLarge, StorageFull (ENOSPC), and
OperationFailed for anything else the kernel refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import secrets
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bai.common.agent_rpc import FileEntry, FileListing
from bai.common.errors import (
    BaiError,
    InvalidRequest,
    NotFound,
    OperationFailed,
    RequestTooLarge,
    StorageFull,
)
from bai.common.workpaths import WorkPathError, work_path

SYS_OPENAT2 = 437  # the same number on every architecture (added in Linux 5.6)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK
FILE_MODE = 0o644
DIR_MODE = 0o755
WRITE_CHUNK = 1 << 20
TEMP_PREFIX = ".bai-upload-"


@dataclass(frozen=True)
class WorkDir:
    """A session's /home/work on the host: the scratch dir (a path the agent made,
    none of whose parts the sandbox can change) and the owner to give what we create
    (uid = gid; None: the agent's own, when it does not switch uids)."""

    path: Path
    owner: int | None


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_openat2_works: bool | None = None  # None: not tried yet


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, RESOLVE)
    for _ in range(8):  # EAGAIN: a rename raced the lookup; the kernel asks for a retry
        fd = _libc.syscall(
            SYS_OPENAT2, ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)),
        )  # fmt: skip
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        if code != errno.EAGAIN:
            raise OSError(code, os.strerror(code), path)
    raise OSError(errno.EAGAIN, "the path kept changing while it was resolved", path)


def _open_nofollow(dir_fd: int, name: str, flags: int, mode: int = 0) -> int:
    """openat of one name, never through a link: ELOOP for a link (with O_DIRECTORY the
    kernel says ENOTDIR; told apart by an lstat)."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except NotADirectoryError:
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, "a symbolic link", name) from None
        raise


def _walk_open(dir_fd: int, path: str, flags: int, mode: int) -> int:
    """openat2's guarantees without it: one component at a time, each opened
    ``O_NOFOLLOW`` (a link fails with ELOOP) and checked to be on the root's device."""
    device = os.fstat(dir_fd).st_dev
    parts = path.split("/")
    current = dir_fd
    try:
        for part in parts[:-1]:
            child = _open_nofollow(current, part, DIR_FLAGS)
            if current != dir_fd:
                os.close(current)
            current = child
            if os.fstat(current).st_dev != device:
                raise OSError(errno.EXDEV, "crosses a mount point", path)
        fd = _open_nofollow(current, parts[-1], flags, mode)
        if os.fstat(fd).st_dev != device:
            os.close(fd)
            raise OSError(errno.EXDEV, "crosses a mount point", path)
        return fd
    finally:
        if current != dir_fd:
            os.close(current)


def open_beneath(dir_fd: int, path: str, flags: int, mode: int = 0, *, walk: bool = False) -> int:
    """An fd for ``path`` (relative, already checked; "." for ``dir_fd`` itself)
    resolved strictly below ``dir_fd``, following no link. Raises OSError (ELOOP for a
    link on the way, EXDEV for a mount point). ``walk`` forces the fallback (tests)."""
    global _openat2_works
    if not walk and _openat2_works is not False:
        try:
            fd = _openat2(dir_fd, path, flags, mode)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM) or _openat2_works:
                raise
            _openat2_works = False  # no openat2 here: walk from now on
        else:
            _openat2_works = True
            return fd
    return _walk_open(dir_fd, path, flags, mode)


def refusal(path: str, exc: OSError, field: str = "path") -> BaiError:
    """The domain error for an OSError met while working on ``path``."""
    shown = f"{path or '.'!r}"
    known: dict[int, BaiError] = {
        errno.ELOOP: InvalidRequest(
            f"{field}: {shown}: a symbolic link is on the way (links made in the session are not followed)", field=field
        ),
        errno.EXDEV: InvalidRequest(f"{field}: {shown} crosses a mount point", field=field),
        errno.ENOTDIR: InvalidRequest(f"{field}: {shown}: a part of the path is not a directory", field=field),
        errno.EISDIR: InvalidRequest(f"{field}: {shown} is a directory", field=field),
        errno.ENAMETOOLONG: InvalidRequest(f"{field}: {shown} is too long", field=field),
        errno.ENXIO: InvalidRequest(f"{field}: {shown} is a special file (a socket?)", field=field),
        errno.EACCES: InvalidRequest(f"{field}: {shown} cannot be opened (a special file?)", field=field),
        errno.ENOENT: NotFound(f"{field}: {shown}: no such file or directory in /home/work"),
        errno.ENOSPC: StorageFull(f"{field}: {shown}: the session's /home/work is full"),
        errno.EDQUOT: StorageFull(f"{field}: {shown}: the session's /home/work is full"),
    }
    return known.get(exc.errno or 0, OperationFailed(f"{field}: {shown}: {exc.strerror}"))


def checked(raw: str, field: str, *, allow_root: bool = False) -> str:
    try:
        return work_path(raw, allow_absolute=True, allow_root=allow_root)
    except WorkPathError as exc:
        raise InvalidRequest(f"{field}: {exc}", field=field) from None


def open_root(work: WorkDir) -> int:
    try:
        return os.open(work.path, DIR_FLAGS | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise OperationFailed(f"the session's /home/work is not available: {exc.strerror}") from exc


def _give(fd: int, owner: int | None, mode: int) -> None:
    if owner is not None:
        os.fchown(fd, owner, owner)
    os.fchmod(fd, mode)


# -- upload ----------------------------------------------------------------------


@dataclass
class _Pending:
    """An upload being written: its directory, the final name, the temporary one."""

    dir_fd: int
    name: str
    temp: str
    fd: int


def _open_dirs(root: int, parts: list[str], owner: int | None) -> int:
    """An fd on the directory ``parts`` below ``root``, creating what is missing
    (owned by ``owner``, mode 0755); a link or a non-directory on the way fails."""
    current = os.dup(root)
    try:
        for part in parts:
            try:
                child = open_beneath(current, part, DIR_FLAGS)
            except FileNotFoundError:
                made = False
                with contextlib.suppress(FileExistsError):  # made meanwhile (by the session?): opened like any other
                    os.mkdir(part, DIR_MODE, dir_fd=current)
                    made = True
                child = open_beneath(current, part, DIR_FLAGS)
                if made:
                    _give(child, owner, DIR_MODE)
            os.close(current)
            current = child
        return current
    except BaseException:
        os.close(current)
        raise


def _check_replaceable(dir_fd: int, name: str, path: str) -> None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode):
        return
    what = (
        "a symbolic link"
        if stat.S_ISLNK(info.st_mode)
        else ("a directory" if stat.S_ISDIR(info.st_mode) else "a special file")
    )
    raise InvalidRequest(f"src: {path!r} is {what} in the session; it is not replaced", field="src")


def begin_upload(work: WorkDir, path: str) -> _Pending:
    """Make the target's directories and a temporary file beside the target."""
    *parents, name = path.split("/")
    root = open_root(work)
    try:
        dir_fd = _open_dirs(root, parents, work.owner)
    finally:
        os.close(root)
    try:
        _check_replaceable(dir_fd, name, path)
        temp = TEMP_PREFIX + secrets.token_hex(8)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
        try:
            _give(fd, work.owner, FILE_MODE)
        except BaseException:
            os.close(fd)
            os.unlink(temp, dir_fd=dir_fd)
            raise
    except BaseException:
        os.close(dir_fd)
        raise
    return _Pending(dir_fd, name, temp, fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def finish_upload(pending: _Pending, path: str) -> None:
    """Rename the written temporary file over the target (a regular file or nothing)."""
    try:
        os.close(pending.fd)
        pending.fd = -1
        _check_replaceable(pending.dir_fd, pending.name, path)
        os.rename(pending.temp, pending.name, src_dir_fd=pending.dir_fd, dst_dir_fd=pending.dir_fd)
    except BaseException:
        abort_upload(pending)
        raise
    os.close(pending.dir_fd)


def abort_upload(pending: _Pending) -> None:
    if pending.fd >= 0:
        os.close(pending.fd)
        pending.fd = -1
    try:
        os.unlink(pending.temp, dir_fd=pending.dir_fd)
    except OSError:
        pass  # already gone (the session may delete it)
    finally:
        os.close(pending.dir_fd)


async def upload(work: WorkDir, raw_path: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
    """Write ``chunks`` to ``raw_path`` below ``work``; returns the bytes written.
    The target appears whole or not at all."""
    path = checked(raw_path, "src")
    try:
        pending = await asyncio.to_thread(begin_upload, work, path)
    except OSError as exc:
        raise refusal(path, exc, "src") from exc
    size = 0
    try:
        buffer = bytearray()
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise RequestTooLarge(f"src: {path!r} is larger than {max_bytes} bytes, the limit", field="src")
            buffer += chunk
            if len(buffer) >= WRITE_CHUNK:
                await asyncio.to_thread(_write_all, pending.fd, bytes(buffer))
                buffer.clear()
        if buffer:
            await asyncio.to_thread(_write_all, pending.fd, bytes(buffer))
    except BaseException as exc:
        abort_upload(pending)
        if isinstance(exc, OSError):
            raise refusal(path, exc, "src") from exc
        raise
    try:
        await asyncio.to_thread(finish_upload, pending, path)
    except OSError as exc:
        raise refusal(path, exc, "src") from exc
    return size


# -- listing ---------------------------------------------------------------------


def _entry(name: str, info: os.stat_result) -> FileEntry:
    mode = info.st_mode
    kind: Literal["file", "dir", "link", "other"] = (
        "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode)
        else "link" if stat.S_ISLNK(mode) else "other")  # fmt: skip
    return FileEntry(
        filename=name, type=kind, size=info.st_size, mode=stat.filemode(mode),
        mtime=info.st_mtime, ctime=info.st_ctime, atime=info.st_atime,
    )  # fmt: skip


def _opens(root: int, path: str) -> bool:
    try:
        os.close(open_beneath(root, path, READ_FLAGS))
    except OSError:
        return False
    return True


def list_dir(work: WorkDir, path: str, max_entries: int) -> FileListing:
    """The entries of the directory ``path`` (lstat: links described, not followed),
    sorted by name, at most ``max_entries``."""
    root = open_root(work)
    try:
        fd = open_beneath(root, path or ".", DIR_FLAGS | os.O_NONBLOCK)
    except OSError as exc:
        if isinstance(exc, NotADirectoryError) and _opens(root, path):  # the last component is the file
            raise InvalidRequest(f"path: {path!r} is not a directory", field="path") from exc
        raise refusal(path, exc) from exc
    finally:
        os.close(root)
    entries: list[FileEntry] = []
    truncated = False
    try:
        with os.scandir(fd) as listing:
            for item in listing:
                if len(entries) >= max_entries:
                    truncated = True
                    break
                try:
                    entries.append(_entry(item.name, item.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    continue  # removed meanwhile
    finally:
        os.close(fd)
    entries.sort(key=lambda entry: entry.filename)
    return FileListing(path=path, entries=entries, truncated=truncated)


async def list_files(work: WorkDir, raw_path: str, max_entries: int) -> FileListing:
    path = checked(raw_path, "path", allow_root=True)
    return await asyncio.to_thread(list_dir, work, path, max_entries)
