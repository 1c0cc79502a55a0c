"""Scratch disks (bai.agent.scratch, bai.agent.mounts) on their own, without sandboxes:
each kind is made, measured and removed; a crashed agent's leftovers are reconciled;
"auto" falls back to a plain dir where the host cannot mount. The mounted kinds need
root, loop devices and mkfs.ext4 and are skipped with the reason where absent."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bai.agent import mounts, scratch
from bai.agent.backends.local import backend as local
from bai.agent.scratch import Scratch, ScratchDisks, ScratchError, ScratchType, open_disks, reconcile
from bai.common.agent_rpc import SandboxSpec
from tests.capabilities import needs
from tests.waiting import HANG_S, until

MiB = 2**20
HOSTFILE_REASON = scratch.hostfile_unavailable()
MEMORY_REASON = None if os.geteuid() == 0 else "mounting a tmpfs needs root"
UID = 1_234_567 if os.geteuid() == 0 else os.geteuid()  # as root: a uid no one has, as a sandbox's
needs_hostfile = needs("sandbox", HOSTFILE_REASON and f"hostfile scratch: {HOSTFILE_REASON}")
needs_memory = needs("sandbox", MEMORY_REASON)
KINDS = [
    pytest.param("hostfile", marks=needs_hostfile),
    pytest.param("memory", marks=needs_memory),
    pytest.param("hostdir"),
]


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    root, images = tmp_path / "scratch", tmp_path / "images"
    root.mkdir()
    yield root, images
    mounts.unmount_under(tmp_path)  # a failed test must not leave a mount behind


def disks_of(kind: ScratchType, layout: tuple[Path, Path], default_cap: int = 32 * MiB) -> ScratchDisks:
    disks = ScratchDisks(kind, *layout, default_cap=default_cap)
    disks.prepare()
    return disks


def fill(path: Path, limit: int) -> tuple[int, int | None]:
    """Write up to ``limit`` bytes into ``path``: (bytes written, errno of the failure or None)."""
    written = 0
    chunk = b"z" * MiB
    try:
        with open(path, "wb") as f:
            while written < limit:
                written += f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return written, exc.errno
    return written, None


def image_bytes(disk: Scratch) -> int:
    assert disk.image is not None
    return os.stat(disk.image).st_blocks * 512


def mount_options(path: Path) -> set[str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(path):
                return set(fields[5].split(","))
    return set()


@pytest.mark.parametrize("kind", KINDS)
def test_create_gives_the_sandbox_an_empty_private_root(kind: ScratchType, layout: tuple[Path, Path]) -> None:
    disks = disks_of(kind, layout)
    disk = disks.create("s1", None, UID, UID)
    try:
        info = os.stat(disk.path)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (UID, UID, 0o700)
        assert os.listdir(disk.path) == []  # no lost+found
        assert disks.usage(disk) == 0
        assert disk.kind == kind
        if kind == "hostdir":
            assert disk.cap is None and not mounts.is_mount_point(disk.path)
        else:
            assert disk.cap == 32 * MiB
            assert mounts.is_mount_point(disk.path)
            assert {"nosuid", "nodev"} <= mount_options(disk.path)
        if kind == "hostfile":
            assert disk.image is not None and disk.image.parent == layout[1]
            image = os.stat(disk.image)
            assert (image.st_uid, stat.S_IMODE(image.st_mode)) == (0, 0o600)
            assert image.st_size == 32 * MiB
            assert image_bytes(disk) < 4 * MiB  # sparse: the empty file system costs little
            assert stat.S_IMODE(os.stat(layout[1]).st_mode) == 0o700
    finally:
        disks.remove(disk)


@pytest.mark.parametrize("kind", [KINDS[0], KINDS[1]])
def test_writing_past_the_cap_fails_with_enospc(kind: ScratchType, layout: tuple[Path, Path]) -> None:
    disks = disks_of(kind, layout)
    disk = disks.create("s1", 16 * MiB, os.geteuid(), os.getegid())
    try:
        written, error = fill(disk.path / "big", 64 * MiB)
        assert error == errno.ENOSPC
        assert 12 * MiB <= written <= 16 * MiB
        assert 12 * MiB <= disks.usage(disk) <= 16 * MiB
        if disk.image is not None:
            assert image_bytes(disk) <= 16 * MiB  # the host's disk grew by the cap at most
        os.unlink(disk.path / "big")
        assert disks.usage(disk) < MiB
        assert fill(disk.path / "again", 4 * MiB) == (4 * MiB, None)
    finally:
        disks.remove(disk)


@pytest.mark.parametrize("kind", KINDS)
def test_remove_unmounts_and_deletes_everything(kind: ScratchType, layout: tuple[Path, Path]) -> None:
    disks = disks_of(kind, layout)
    disk = disks.create("s1", None, os.geteuid(), os.getegid())
    (disk.path / "sub").mkdir()
    (disk.path / "sub" / "f").write_bytes(b"x" * 100_000)
    disks.remove(disk)
    assert not disk.path.exists()
    assert not mounts.is_mount_point(disk.path)
    if disk.image is not None:
        assert not disk.image.exists()
        assert str(disk.image) not in loop_backing_files()
    disks.remove(disk)  # idempotent


def loop_backing_files() -> set[str]:
    found = set()
    for entry in Path("/sys/block").glob("loop*"):
        backing = entry / "loop" / "backing_file"
        if backing.exists():
            found.add(backing.read_text().strip())
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_usage_and_remove_follow_no_planted_link(kind: ScratchType, layout: tuple[Path, Path], tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_bytes(b"k" * 300_000)
    disks = disks_of(kind, layout)
    disk = disks.create("s1", None, os.geteuid(), os.getegid())
    (disk.path / "to-file").symlink_to(victim / "keep.txt")
    (disk.path / "to-dir").symlink_to(victim)
    (disk.path / "to-root").symlink_to("/")
    os.mkfifo(disk.path / "fifo")
    assert disks.usage(disk) < 300_000
    disks.remove(disk)
    assert (victim / "keep.txt").read_bytes() == b"k" * 300_000


@needs_hostfile
def test_sizes_are_per_session(layout: tuple[Path, Path]) -> None:
    disks = disks_of("hostfile", layout, default_cap=64 * MiB)
    small, default = disks.create("small", 16 * MiB, 0, 0), disks.create("default", None, 0, 0)
    try:
        assert (small.cap, default.cap) == (16 * MiB, 64 * MiB)
        assert os.statvfs(small.path).f_blocks * 4096 <= 16 * MiB < os.statvfs(default.path).f_blocks * 4096
        assert disks.cap_for(None) == 64 * MiB and disks.cap_for(16 * MiB) == 16 * MiB
    finally:
        disks.remove(small)
        disks.remove(default)
    assert ScratchDisks("hostdir", *layout, default_cap=64 * MiB).cap_for(16 * MiB) is None


@needs_hostfile
def test_a_failed_create_leaves_nothing(layout: tuple[Path, Path]) -> None:
    disks = disks_of("hostfile", layout)
    disks.mkfs = "/nonexistent/mkfs.ext4"
    with pytest.raises(ScratchError, match="hostfile scratch disk"):
        disks.create("s1", None, 0, 0)
    assert not (layout[0] / "s1").exists()
    assert list(layout[1].iterdir()) == []
    disks.mkfs = "/bin/false"
    with pytest.raises(ScratchError, match=r"mkfs\.ext4 failed"):
        disks.create("s1", None, 0, 0)
    assert not (layout[0] / "s1").exists() and list(layout[1].iterdir()) == []


@needs_hostfile
@needs_memory
def test_reconcile_releases_a_crashed_agents_mounts_and_images(layout: tuple[Path, Path]) -> None:
    root, images = layout
    left = [disks_of(kind, layout).create(f"s-{kind}", None, 0, 0) for kind in ("hostfile", "memory")]
    (left[0].path / "data").write_bytes(b"d" * 10_000)
    (images / "stray.img").write_bytes(b"")
    released = reconcile(root, images)
    assert sorted(released) == sorted(
        [f"mount {left[0].path}", f"mount {left[1].path}", f"image {left[0].image}", f"image {images / 'stray.img'}"]
    )
    assert mounts.mounts_under(root) == []
    assert list(images.iterdir()) == []
    assert str(left[0].image) not in loop_backing_files()
    assert sorted(p.name for p in root.iterdir()) == ["s-hostfile", "s-memory"]  # empty dirs, for the caller
    assert reconcile(root, images) == []


def test_mounts_under_reads_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 27 0:21 / /proc rw - proc proc rw\n"
        "90 27 7:0 / /data/scratch/a rw,nosuid - ext4 /dev/loop0 rw\n"
        "91 90 0:50 / /data/scratch/a/deep rw - tmpfs tmpfs rw\n"
        "92 27 0:51 / /data/scratch/with\\040space rw - tmpfs tmpfs rw\n"
        "93 27 0:52 / /data/scratchy rw - tmpfs tmpfs rw\n"
        "94 27 0:53 / /data/scratch rw - tmpfs tmpfs rw\n"
    )
    found = mounts.mounts_under(Path("/data/scratch/"), mountinfo=str(info))
    assert found == [Path("/data/scratch/a/deep"), Path("/data/scratch/a"), Path("/data/scratch/with space")]


def test_open_disks_auto_falls_back_to_a_plain_dir(
    layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(scratch, "hostfile_unavailable", lambda: "no loop devices here")
    with caplog.at_level(logging.WARNING, logger="bai.agent.scratch"):
        disks = open_disks("auto", *layout, default_cap=32 * MiB)
    assert disks.kind == "hostdir"
    assert [r.getMessage() for r in caplog.records] == [
        "scratch disks: no hostfile (no loop devices here); /home/work is a plain directory with no size cap"
    ]
    with pytest.raises(ScratchError, match="no hostfile scratch disks on this host: no loop devices here"):
        open_disks("hostfile", *layout, default_cap=32 * MiB)
    assert open_disks("hostdir", *layout, default_cap=32 * MiB).kind == "hostdir"


@needs_hostfile
def test_open_disks_auto_picks_hostfile_and_probes_it(layout: tuple[Path, Path]) -> None:
    disks = open_disks("auto", *layout, default_cap=32 * MiB)
    assert disks.kind == "hostfile"
    assert list(layout[0].iterdir()) == [] and list(layout[1].iterdir()) == []  # the probe cleaned up
    assert open_disks("memory", *layout, default_cap=32 * MiB).kind == "memory"


async def test_a_cancelled_create_removes_the_disk_it_made(layout: tuple[Path, Path]) -> None:
    entered, cancelled, made = threading.Event(), threading.Event(), threading.Event()

    class Held(ScratchDisks):
        """Makes its disk only once the caller has been cancelled."""

        def create(self, name: str, cap: int | None, uid: int, gid: int) -> Scratch:
            entered.set()
            assert cancelled.wait(HANG_S)
            disk = super().create(name, cap, uid, gid)
            made.set()
            return disk

    disks = Held("hostdir", *layout, default_cap=32 * MiB)
    spec = SandboxSpec(session_id="s1", session_name="s1", environment="python", resources={})
    task = asyncio.create_task(local._make_scratch(disks, spec, os.geteuid()))
    assert await asyncio.to_thread(entered.wait, HANG_S)  # the create runs in its thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled.set()
    assert await asyncio.to_thread(made.wait, HANG_S)
    await until(lambda: not (layout[0] / "s1").exists(), what="the cancelled session's disk to be removed")
