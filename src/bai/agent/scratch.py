"""Scratch dirs: each session's writable /home/work on the host.

The sandbox owns the contents and may plant links, fifos or device-less
special files in them; so the host side never opens, chowns or chmods a path
inside by name. Sizing walks with directory fds and ``lstat`` (``os.fwalk``,
links not followed); removal is ``shutil.rmtree``, which on Linux is fd-based
and does not follow links. Both do disk I/O: call them in a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path


def create_scratch(root: Path, session_id: str, uid: int, gid: int) -> Path:
    """Make ``root/session_id`` (mode 0700, owned by the sandbox's host uid)."""
    path = root / session_id
    os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def scratch_size(path: Path) -> int:
    """Bytes of everything under ``path`` (apparent sizes, by lstat; links not followed)."""
    total = 0
    try:
        for _dir, _dirs, files, dirfd in os.fwalk(path, follow_symlinks=False):
            for name in files:
                try:
                    info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
                    total += info.st_size
    except FileNotFoundError:
        return 0
    return total


def remove_scratch(path: Path) -> None:
    """Delete the scratch dir and all in it, following no link the sandbox planted."""
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - Linux always has it
        raise RuntimeError("this platform cannot remove a directory tree safely")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def reachable_by_others(path: Path) -> Path | None:
    """The first directory from / down to ``path`` that other uids cannot traverse, or None.

    bwrap runs as the sandbox's unprivileged uid and resolves its bind sources
    itself, so every ancestor of a bind source needs the execute bit for others."""
    current = Path("/")
    for part in path.resolve().parts[1:]:
        current = current / part
        mode = current.stat().st_mode
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return current
    return None
