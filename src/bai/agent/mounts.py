"""Loop devices and mounts through the kernel's own interfaces: ioctls on
``/dev/loop-control`` and ``/dev/loopN``, and ``mount(2)`` / ``umount2(2)`` through
ctypes. No ``mount`` or ``losetup`` process is started. Linux only; needs root
(CAP_SYS_ADMIN). Used by bai.agent.scratch.

Why not ``mount -o loop``: measured on the 2-core dev machine (20 runs each,
a fresh 1 GiB ext4 image), attach + mount takes 0.6-0.8 ms this way and
2.2-2.3 ms through the ``mount`` program.

A loop device is configured with ``LO_FLAGS_AUTOCLEAR``: the kernel detaches it
when its last user is gone, so once the file system is unmounted (and the
caller closed the device's fd) nothing is left to release.

Errors: ``OSError`` with the errno the kernel gave.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import struct
from pathlib import Path

LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A  # Linux >= 5.8
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# struct loop_info64: lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit (u64);
# lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags (u32); lo_file_name[64],
# lo_crypt_name[64], lo_encrypt_key[32]; lo_init[2] (u64). 232 bytes.
_LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
# struct loop_config: fd, block_size (u32); struct loop_info64; __reserved[8] (u64). 304 bytes.
_RESERVED = bytes(64)
_ESCAPE = re.compile(r"\\([0-7]{3})")
ATTACH_TRIES = 16  # another process may take the free device between GET_FREE and CONFIGURE


class _Libc:
    """mount(2) and umount2(2), loaded once on first use."""

    _lib: ctypes.CDLL | None = None

    @classmethod
    def lib(cls) -> ctypes.CDLL:
        if cls._lib is None:
            try:
                lib = ctypes.CDLL("libc.so.6", use_errno=True)
            except OSError:  # pragma: no cover - a libc under another name (musl)
                lib = ctypes.CDLL(None, use_errno=True)
            lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
            lib.mount.restype = ctypes.c_int
            lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
            lib.umount2.restype = ctypes.c_int
            cls._lib = lib
        return cls._lib


def _raise_errno(what: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")


def _loop_config(backing_fd: int, direct_io: bool) -> bytes:
    """Direct I/O (with 4 KiB blocks, the file system's) keeps the image's pages out of
    the host's page cache and lets the kernel charge the writes to the session's cgroup."""
    flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_DIRECT_IO if direct_io else 0)
    info = _LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, b"", b"", b"", 0, 0)
    return struct.pack("=II", backing_fd, 4096 if direct_io else 0) + info + _RESERVED


def attach_loop(image: Path) -> tuple[str, int]:
    """Bind ``image`` to a free loop device (read-write, autoclear). Returns the
    device's path and an open fd on it: keep the fd until the device is mounted,
    then close it (closing it earlier detaches the device)."""
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
        try:
            return _configure_free_device(control, backing)
        finally:
            os.close(control)
    finally:
        os.close(backing)


def _configure_free_device(control: int, backing: int) -> tuple[str, int]:
    for _ in range(ATTACH_TRIES):
        number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
        device = f"/dev/loop{number}"
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        try:
            _configure(fd, backing)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EBUSY:
                continue
            raise
        return device, fd
    raise OSError(errno.EBUSY, f"no free loop device after {ATTACH_TRIES} tries")


def _configure(fd: int, backing: int) -> None:
    try:
        fcntl.ioctl(fd, LOOP_CONFIGURE, _loop_config(backing, direct_io=True))
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a backing file system without direct I/O
            raise
        fcntl.ioctl(fd, LOOP_CONFIGURE, _loop_config(backing, direct_io=False))


def mount(source: str, target: Path, fstype: str, flags: int, data: str = "") -> None:
    result: int = _Libc.lib().mount(source.encode(), os.fsencode(target), fstype.encode(), flags, data.encode())
    if result != 0:
        _raise_errno(f"mount {fstype} on {target}")


def unmount(target: Path) -> bool:
    """Detach the mount at ``target`` (lazily: ``MNT_DETACH``), following no link.
    False when nothing is mounted there."""
    result: int = _Libc.lib().umount2(os.fsencode(target), MNT_DETACH | UMOUNT_NOFOLLOW)
    if result == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOENT):  # not a mount point; gone
        return False
    _raise_errno(f"umount {target}")
    return False  # pragma: no cover - _raise_errno raised


def mount_loop(image: Path, target: Path, fstype: str, flags: int, data: str = "") -> None:
    """Mount the file system in ``image`` at ``target`` through a fresh loop device."""
    device, fd = attach_loop(image)
    try:
        mount(device, target, fstype, flags, data)
    finally:
        os.close(fd)  # the mount holds the device now; without one, autoclear frees it


def _unescape(field: str) -> str:
    r"""/proc/self/mountinfo writes space, tab, newline and backslash as \040 \011 \012 \134."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def mounts_under(root: Path, mountinfo: str = "/proc/self/mountinfo") -> list[Path]:
    """Mount points strictly below ``root`` in this mount namespace, deepest first."""
    base = os.path.normpath(os.fspath(root)) + "/"
    found: list[str] = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                point = _unescape(fields[4])
                if point.startswith(base):
                    found.append(point)
    return [Path(p) for p in sorted(set(found), key=lambda p: (-p.count("/"), p))]


def unmount_under(root: Path) -> list[Path]:
    """Detach every mount below ``root`` (deepest first); the ones detached."""
    done = []
    for point in mounts_under(root):
        with contextlib.suppress(FileNotFoundError):
            if unmount(point):
                done.append(point)
    return done


def is_mount_point(path: Path) -> bool:
    """Whether something is mounted at ``path`` (by this namespace's mountinfo)."""
    return path in mounts_under(path.parent)
