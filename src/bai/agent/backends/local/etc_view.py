"""The sandboxes' /etc: a copy of the host's entries they see, bound once per sandbox.

bwrap used to bind each entry of ``bwrap.ETC_ENTRIES`` on its own: about 28 read-only
binds per sandbox, each a mount, a remount and a parse of /proc/self/mountinfo in bwrap
(≈ 2.5–3 ms of CPU per sandbox). Instead the agent copies those entries, and nothing
else of /etc, into a directory of its share root (root's, mode 0755: files with their
modes, directories with their links kept as links, no special files), with the
synthetic ``passwd``, ``group`` and ``hosts`` written in (the same for every sandbox:
bai.agent.backends.local.bwrap.etc_files; they used to be three ``--ro-bind-data`` per
sandbox, each a pipe, a file bwrap writes and a bind), and each sandbox binds that
directory read-only at /etc.

The copy follows the host: ``refresh`` (the backend calls it in a worker thread every
``REFRESH_S``) compares a fingerprint of the entries (an lstat of everything under them)
with the one the current copy was made from, and makes a new copy when it changed; new
sandboxes get the new one. A copy stays until the agent stops: running sandboxes have it
bound, and deleting it would empty their /etc.

Blocking file I/O throughout. Callers: LocalBackend only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

REFRESH_S = 10.0

Fingerprint = list[tuple[str, int, int, int, int, int]]


class EtcView:
    """Copies of ``entries`` of ``source`` (the host's /etc) under ``base``, each with
    ``files`` (name → contents, mode 0644) written in beside them."""

    def __init__(
        self, base: Path, entries: Iterable[str], files: Mapping[str, bytes], source: Path = Path("/etc")
    ) -> None:
        self.base = base
        self.entries = tuple(entries)
        self.files = dict(files)
        self.source = source
        self.current: Path | None = None
        self._fingerprint: Fingerprint | None = None

    def refresh(self) -> Path | None:
        """Make a new copy if the host's entries changed since the last one (or there is
        none yet): its path, else None."""
        fingerprint = self.fingerprint()
        if self.current is not None and fingerprint == self._fingerprint:
            return None
        view = self._build()
        self.current, self._fingerprint = view, fingerprint
        return view

    def fingerprint(self) -> Fingerprint:
        """What each entry and everything under it is (type, size, times, inode), links not followed."""
        out: Fingerprint = []
        for name in self.entries:
            top = self.source / name
            if not os.path.lexists(top):
                continue
            out.append(_stat_row(name, os.lstat(top)))
            if top.is_dir() and not top.is_symlink():
                for folder, dirs, files, dirfd in os.fwalk(top, follow_symlinks=False):
                    relative = os.path.relpath(folder, self.source)
                    for child in sorted(dirs + files):
                        row = _stat_row(f"{relative}/{child}", os.stat(child, dir_fd=dirfd, follow_symlinks=False))
                        out.append(row)
        return out

    def _build(self) -> Path:
        self.base.mkdir(mode=0o711, exist_ok=True)
        view = self.base / uuid.uuid4().hex[:12]
        view.mkdir(mode=0o755)
        view.chmod(0o755)  # whatever the umask
        try:
            for name in self.entries:
                _copy_entry(self.source / name, view / name)
            for name, data in self.files.items():
                _write_file(view / name, data)
        except BaseException:
            shutil.rmtree(view, ignore_errors=True)
            raise
        return view

    def remove_all(self) -> None:
        """Delete every copy (no sandbox may be running)."""
        shutil.rmtree(self.base, ignore_errors=True)
        self.current, self._fingerprint = None, None


def _write_file(path: Path, data: bytes) -> None:
    """A new file of ``data`` (mode 0644 whatever the umask), in place of a copied entry of that name."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a link or a file, never followed
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, data)
    finally:
        os.close(fd)


def _stat_row(name: str, info: os.stat_result) -> tuple[str, int, int, int, int, int]:
    return (name, info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def _copy_entry(source: Path, dest: Path) -> None:
    """One entry as it is on the host: a link as a link, a file with its mode, a directory
    with its links as links; special files (fifos, sockets, devices) left out."""
    if not os.path.lexists(source):
        return
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    mode = os.lstat(source).st_mode
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(source), dest)
    elif stat.S_ISDIR(mode):
        shutil.copytree(source, dest, symlinks=True, ignore=_special_files)
    elif stat.S_ISREG(mode):
        shutil.copy2(source, dest, follow_symlinks=False)


def _special_files(folder: str, names: list[str]) -> set[str]:
    kept = (stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK)
    return {name for name in names if not any(ok(os.lstat(os.path.join(folder, name)).st_mode) for ok in kept)}
