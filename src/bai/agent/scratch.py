"""Scratch disks: each session's writable /home/work on the host, size-capped.

Three kinds (``AgentConfig.scratch_type``; Backend.AI's agent offers the same):

- ``hostfile``: a sparse ext4 image per session (root-owned, mode 0600, in the
  agent's data dir, which no sandbox sees), loop-mounted ``nosuid,nodev`` at the
  session's scratch dir. Writing past the cap fails with ENOSPC inside the image;
  the host's disk grows by the cap at most.
- ``memory``: a tmpfs of the cap's size at the scratch dir; its pages are charged
  to the memory cgroup of the session that writes them.
- ``hostdir``: a plain directory on the host's disk, with no cap.

The sandbox owns the contents and may plant links, fifos or device-less special
files in them; so the host side never opens, chowns or chmods a path inside by
name. A mounted scratch is set up (owner, mode, lost+found) through an fd on
its fresh root before the sandbox starts; its usage is one ``fstatvfs`` of the
mount's root; its removal is an unmount (``MNT_DETACH``, no link followed) and
the unlink of the image, which never looks inside. A ``hostdir`` is sized by a
walk with directory fds and ``lstat`` (``os.fwalk``, links not followed) and
removed by ``shutil.rmtree``, which on Linux is fd-based and follows no link.

Everything here blocks (mkfs, mount, disk I/O): call it in a worker thread.
Callers: LocalBackend (bai.agent.backends.local.backend) and LocalSandbox.
Errors: ``ScratchError`` from ``ScratchDisks.create`` and ``probe``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import subprocess
import threading
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bai.agent import mounts

log = logging.getLogger(__name__)

ScratchType = Literal["hostfile", "memory", "hostdir"]
MIN_SCRATCH_BYTES = 8 * 2**20
MAX_SCRATCH_BYTES = 2**44  # 16 TiB, ext4's limit with 4 KiB blocks and no 64bit feature
BYTES_PER_INODE = 32 * 2**10
MIN_INODES = 4096
MOUNT_FLAGS = mounts.MS_NOSUID | mounts.MS_NODEV
MKFS_SEARCH_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
TEMPLATE_PREFIX = "_template-"  # an image being made for ScratchDisks._template
PROBE_NAME = "_probe"  # no session id starts with "_" (bai.agent.agent.SESSION_ID_RE)


class ScratchError(Exception):
    """A scratch disk could not be made (mkfs, loop device, mount, disk full)."""


@dataclass(frozen=True)
class Scratch:
    """One session's /home/work on the host."""

    path: Path  # what bwrap binds at /home/work: the mount point, or the plain dir
    kind: ScratchType
    cap: int | None  # bytes; None: no cap (hostdir)
    image: Path | None = None  # hostfile only
    baseline: int = 0  # bytes the empty file system already uses (its metadata), not counted

    @property
    def mounted(self) -> bool:
        return self.kind != "hostdir"


def inode_count(cap: int) -> int:
    return max(MIN_INODES, cap // BYTES_PER_INODE)


def find_mkfs() -> str | None:
    return shutil.which("mkfs.ext4", path=MKFS_SEARCH_PATH)


def hostfile_unavailable() -> str | None:
    """Why this host cannot make hostfile scratch disks (by a look, not a try), or None."""
    if os.geteuid() != 0:
        return "the agent does not run as root"
    if not os.path.exists(mounts.LOOP_CONTROL):
        return f"{mounts.LOOP_CONTROL} is missing"
    if find_mkfs() is None:
        return "mkfs.ext4 is not installed"
    return None


class ScratchDisks:
    """Makes, measures and removes the scratch disks of one agent, all of one kind.

    ``root`` holds the scratch dirs (``root/<name>``, bound into sandboxes);
    ``image_dir`` holds the hostfile images (mode 0700, never bound)."""

    def __init__(self, kind: ScratchType, root: Path, image_dir: Path, default_cap: int) -> None:
        self.kind = kind
        self.root = root
        self.image_dir = image_dir
        self.default_cap = default_cap
        self.mkfs = find_mkfs() or "mkfs.ext4"
        self._template_lock = threading.Lock()  # creates run in worker threads
        self._default_template: list[tuple[int, bytes]] | None = None

    def cap_for(self, requested: int | None) -> int | None:
        """The cap a session gets: its own request, else the agent's default; None for hostdir."""
        if self.kind == "hostdir":
            return None
        return requested if requested is not None else self.default_cap

    # -- create ----------------------------------------------------------------

    def create(self, name: str, cap: int | None, uid: int, gid: int) -> Scratch:
        """Make ``root/name``, owned by ``uid``:``gid`` (mode 0700), capped at ``cap``
        bytes (None: the default; no cap for hostdir). Leaves nothing behind when it fails."""
        path = self.root / name
        cap = self.cap_for(cap)
        if cap is None:
            try:
                return Scratch(create_scratch(self.root, name, uid, gid), "hostdir", None)
            except OSError as exc:
                raise ScratchError(f"cannot create {path}: {exc}") from exc
        try:
            os.mkdir(path, 0o700)  # root's: once unmounted, nothing a sandbox could write
        except OSError as exc:
            raise ScratchError(f"cannot create {path}: {exc}") from exc
        image = self.image_dir / f"{name}.img" if self.kind == "hostfile" else None
        scratch = Scratch(path, self.kind, cap, image)
        try:
            self._mount(scratch)
            baseline = _hand_over(path, uid, gid)
        except (OSError, subprocess.SubprocessError, ScratchError) as exc:
            with contextlib.suppress(OSError):
                self.remove(scratch)
            raise ScratchError(f"cannot make the {self.kind} scratch disk {path}: {exc}") from exc
        return Scratch(path, self.kind, cap, image, baseline)

    def _mount(self, scratch: Scratch) -> None:
        assert scratch.cap is not None
        if scratch.image is not None:
            self._format(scratch.image, scratch.cap)
            mounts.mount_loop(scratch.image, scratch.path, "ext4", MOUNT_FLAGS, "noinit_itable")
        else:
            options = f"size={scratch.cap},nr_inodes={inode_count(scratch.cap)},mode=0700"
            mounts.mount("tmpfs", scratch.path, "tmpfs", MOUNT_FLAGS, options)

    def _format(self, image: Path, cap: int) -> None:
        """A sparse image of ``cap`` bytes holding an empty ext4 (no journal: an image
        never outlives its session, so there is nothing to recover after a crash).

        An image of the default cap (every pooled sandbox's) is a copy of the data
        blocks of one made by mkfs.ext4 once (≈ 80 KiB for 1 GiB, kept in memory):
        a few writes instead of a mkfs run (≈ 2.5 ms of CPU). Its copies share its
        UUID and directory hash seed, which nothing inside a sandbox can read."""
        template = self._template() if cap == self.default_cap else None
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, cap)
            for offset, data in template or ():
                _write_at(fd, data, offset)
        finally:
            os.close(fd)
        if template is None:
            self._mkfs(image, cap)

    def _template(self) -> list[tuple[int, bytes]]:
        """The data segments (offset, bytes) of an empty image of the default cap."""
        with self._template_lock:
            if self._default_template is None:
                path = self.image_dir / f"{TEMPLATE_PREFIX}{uuid.uuid4().hex}.img"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    os.ftruncate(fd, self.default_cap)
                    os.close(fd)
                    self._mkfs(path, self.default_cap)
                    self._default_template = _data_segments(path)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            return self._default_template

    def _mkfs(self, image: Path, cap: int) -> None:
        command = [
            self.mkfs, "-q", "-F", "-m", "0", "-b", "4096", "-N", str(inode_count(cap)),
            "-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard", str(image),
        ]  # fmt: skip
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, env={"PATH": MKFS_SEARCH_PATH, "LC_ALL": "C"}
        )
        if done.returncode != 0:
            reason = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
            raise ScratchError(f"mkfs.ext4 failed: {reason}")

    # -- measure and remove ------------------------------------------------------

    def usage(self, scratch: Scratch) -> int:
        """Bytes the session has stored. Mounted kinds: the file system's used blocks
        less its empty baseline (O(1)); hostdir: a walk (apparent sizes)."""
        if not scratch.mounted:
            return scratch_size(scratch.path)
        try:
            fd = os.open(scratch.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            return max(0, _used_bytes(fd) - scratch.baseline)
        finally:
            os.close(fd)

    def remove(self, scratch: Scratch) -> None:
        """Unmount and delete the scratch disk and its image. Idempotent. Raises
        OSError when the mount point or the dir cannot be removed (the next agent
        start reconciles it)."""
        try:
            if scratch.mounted:
                mounts.unmount(scratch.path)
            remove_scratch(scratch.path)  # an empty mount point now; rmtree if anything was under it
        finally:
            if scratch.image is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(scratch.image)

    # -- agent start ----------------------------------------------------------

    def prepare(self) -> None:
        """Make ``image_dir`` (root's, mode 0700) for hostfile images."""
        self.image_dir.mkdir(mode=0o700, exist_ok=True)
        self.image_dir.chmod(0o700)

    def probe(self) -> None:
        """Make and remove one small scratch disk: proves that this host lets us
        (mount permitted, loop devices, mkfs). Raises ScratchError."""
        scratch = self.create(PROBE_NAME, MIN_SCRATCH_BYTES, os.geteuid(), os.getegid())
        self.remove(scratch)


def open_disks(requested: str, root: Path, image_dir: Path, default_cap: int) -> ScratchDisks:
    """The agent's scratch disks of the ``requested`` kind (``AgentConfig.scratch_type``),
    tried once. "auto" is hostfile where this host allows it, else hostdir with one
    warning in the log. Raises ScratchError when an explicitly requested kind cannot
    work here."""
    if requested == "hostdir":
        return ScratchDisks("hostdir", root, image_dir, default_cap)
    if requested == "memory":
        reason = None if os.geteuid() == 0 else "the agent does not run as root"
        disks = ScratchDisks("memory", root, image_dir, default_cap)
    else:
        reason = hostfile_unavailable()
        disks = ScratchDisks("hostfile", root, image_dir, default_cap)
    if reason is None:
        try:
            disks.prepare()
            disks.probe()
        except (OSError, ScratchError) as exc:
            reason = str(exc)
    if reason is None:
        return disks
    if requested != "auto":
        raise ScratchError(f"no {requested} scratch disks on this host: {reason}")
    log.warning("scratch disks: no hostfile (%s); /home/work is a plain directory with no size cap", reason)
    return ScratchDisks("hostdir", root, image_dir, default_cap)


def reconcile(root: Path, image_dir: Path, keep: Collection[Scratch] = ()) -> list[str]:
    """Release what a crashed agent on this data dir left: mounts below ``root``
    (whatever their kind) and images in ``image_dir``, but for the scratch disks in
    ``keep`` (a re-attached session's). The scratch dirs themselves are left to the
    caller. Returns what was released, for the log."""
    kept_points = {scratch.path for scratch in keep}
    kept_images = {scratch.image for scratch in keep if scratch.image is not None}
    released = []
    for point in mounts.mounts_under(root):
        if point in kept_points or any(kept in point.parents for kept in kept_points):
            continue
        with contextlib.suppress(FileNotFoundError):
            if mounts.unmount(point):
                released.append(f"mount {point}")
    if image_dir.is_dir():
        for entry in os.scandir(image_dir):
            if not entry.is_dir(follow_symlinks=False) and Path(entry.path) not in kept_images:
                os.unlink(entry.path)
                released.append(f"image {entry.path}")
    return released


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _data_segments(path: Path) -> list[tuple[int, bytes]]:
    """What a sparse file holds outside its holes: (offset, bytes) in order."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        end, offset, segments = os.fstat(fd).st_size, 0, []
        while offset < end:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:  # ENXIO: no data after offset
                if exc.errno == errno.ENXIO:
                    break
                raise
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            segments.append((start, os.pread(fd, stop - start, start)))
            offset = stop
        return segments
    finally:
        os.close(fd)


def _hand_over(path: Path, uid: int, gid: int) -> int:
    """Give the fresh file system's root to the sandbox's uid (mode 0700) and drop
    ext4's lost+found; the used bytes now (the baseline). Through an fd on the root:
    nothing of the sandbox's exists yet, but no name is followed anyway."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir("lost+found", dir_fd=fd)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o700)
        return _used_bytes(fd)
    finally:
        os.close(fd)


def _used_bytes(fd: int) -> int:
    info = os.fstatvfs(fd)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


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
