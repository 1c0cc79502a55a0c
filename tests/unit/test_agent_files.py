"""bai.agent.files and bai.agent.downloads on a plain directory (no sandbox): the
path rules with openat2 and with the fallback walk, uploads, listings, tars."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import stat
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bai.agent import downloads, files
from bai.common.errors import InvalidRequest, NotFound, RequestTooLarge
from bai.common.workpaths import WorkPathError, work_path

OWNER = 54321


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "walk":
        monkeypatch.setattr(files, "_openat2_works", False)
    yield request.param


@pytest.fixture
def work(tmp_path: Path, mode: str) -> files.WorkDir:
    root = tmp_path / "work"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    (root / "to-outside").symlink_to(outside)
    (root / "to-secret").symlink_to(outside / "secret")
    (root / "rel-up").symlink_to("../outside")
    os.mkfifo(root / "fifo")
    (root / "plain").mkdir()
    (root / "plain" / "f.txt").write_text("hello")
    return files.WorkDir(root, OWNER if os.geteuid() == 0 else None)


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def do_upload(work: files.WorkDir, path: str, *parts: bytes, limit: int = 1 << 20) -> int:
    return asyncio.run(files.upload(work, path, chunks_of(*parts), limit))


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a", "a"),
        ("a/b", "a/b"),
        ("./a//b/", "a/b"),
        ("/home/work/a", "a"),
        ("/home/work", ""),
        (".", ""),
    ],
)
def test_work_path_normalises(raw: str, expected: str) -> None:
    assert work_path(raw, allow_absolute=True, allow_root=True) == expected


@pytest.mark.parametrize("raw", ["..", "a/../..", "../x", "/etc/passwd", "/home/workx/a", "a\x00", "", "x" * 256])
def test_work_path_refuses(raw: str) -> None:
    with pytest.raises(WorkPathError):
        work_path(raw, allow_absolute=True)


def test_open_beneath_refuses_links_everywhere(work: files.WorkDir) -> None:
    root = files.open_root(work)
    try:
        for path in ("to-outside", "to-outside/secret", "to-secret", "rel-up/secret"):
            with pytest.raises(OSError) as caught:
                files.open_beneath(root, path, os.O_RDONLY)
            assert caught.value.errno in (40, 18), path  # ELOOP (EXDEV is fine too)
        fd = files.open_beneath(root, "plain/f.txt", os.O_RDONLY)
        assert os.read(fd, 10) == b"hello"
        os.close(fd)
    finally:
        os.close(root)


def test_upload_creates_dirs_owned_by_the_session_and_replaces_files(work: files.WorkDir) -> None:
    assert do_upload(work, "new/deep/file.bin", b"ab", b"cd") == 4
    target = work.path / "new" / "deep" / "file.bin"
    assert target.read_bytes() == b"abcd"
    for path, mode in ((target, 0o644), (target.parent, 0o755), (work.path / "new", 0o755)):
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == mode
        if work.owner is not None:
            assert (info.st_uid, info.st_gid) == (work.owner, work.owner)
    do_upload(work, "plain/f.txt", b"replaced")
    assert (work.path / "plain" / "f.txt").read_text() == "replaced"
    assert sorted(os.listdir(work.path / "plain")) == ["f.txt"]  # no temporary left


@pytest.mark.parametrize(
    "path, why",
    [
        ("to-secret", "symbolic link"),
        ("to-outside/secret", "symbolic link"),
        ("to-outside/new", "symbolic link"),
        ("rel-up/secret", "symbolic link"),
        ("fifo", "special file"),
        ("plain", "directory"),
        ("plain/f.txt/x", "not a directory"),
    ],
)
def test_upload_refusals_leave_the_outside_alone(work: files.WorkDir, path: str, why: str) -> None:
    outside = work.path.parent / "outside"
    with pytest.raises(InvalidRequest) as caught:
        do_upload(work, path, b"pwned")
    assert why in caught.value.message and repr(path) in caught.value.message
    assert sorted(os.listdir(outside)) == ["secret"] and (outside / "secret").read_text() == "host secret"
    assert not [n for n in os.listdir(work.path) if n.startswith(files.TEMP_PREFIX)]


def test_upload_over_its_limit_leaves_nothing(work: files.WorkDir) -> None:
    with pytest.raises(RequestTooLarge):
        do_upload(work, "big", b"x" * 10, b"y" * 10, limit=15)
    assert not (work.path / "big").exists()
    assert not [n for n in os.listdir(work.path) if n.startswith(files.TEMP_PREFIX)]


def test_listing_describes_links_without_following(work: files.WorkDir) -> None:
    listing = files.list_dir(work, "", 100)
    kinds = {entry.filename: entry.type for entry in listing.entries}
    assert kinds == {"to-outside": "link", "to-secret": "link", "rel-up": "link", "fifo": "other", "plain": "dir"}
    with pytest.raises(InvalidRequest):
        files.list_dir(work, "to-outside", 100)
    with pytest.raises(NotFound):
        files.list_dir(work, "missing", 100)
    with pytest.raises(InvalidRequest, match=r"'plain/f\.txt' is not a directory"):
        files.list_dir(work, "plain/f.txt", 100)
    assert files.list_dir(work, "", 2).truncated


async def collect(work: files.WorkDir, paths: list[str], limit: int = 1 << 20) -> bytes:
    stream = await downloads.download(work, paths, limit)
    return b"".join([chunk async for chunk in stream.chunks])


def test_download_tars_a_tree_storing_links(work: files.WorkDir) -> None:
    (work.path / "plain" / "link").symlink_to("/etc/shadow")
    os.mkfifo(work.path / "plain" / "fifo")
    body = asyncio.run(collect(work, ["plain"]))
    start = body.index(b"\r\n\r\n") + 4
    end = body.rindex(b"\r\n--")
    with tarfile.open(fileobj=io.BytesIO(body[start:end])) as tar:
        assert sorted(tar.getnames()) == ["plain", "plain/f.txt", "plain/link"]
        assert tar.getmember("plain/link").linkname == "/etc/shadow"


@pytest.mark.parametrize("path", ["to-secret", "to-outside", "rel-up/secret", "fifo", "socket"])
def test_download_refusals(work: files.WorkDir, path: str) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(work.path / "socket"))
        with pytest.raises(InvalidRequest):
            asyncio.run(collect(work, [path]))


def test_download_size_limit_is_checked_before_the_first_byte(work: files.WorkDir) -> None:
    (work.path / "plain" / "big").write_bytes(b"z" * 100)
    with pytest.raises(RequestTooLarge):
        asyncio.run(collect(work, ["plain"], limit=50))


def test_a_download_dropped_unread_closes_its_fds(work: files.WorkDir) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def drop() -> None:
        stream = await downloads.download(work, ["plain", "plain/f.txt"], 1 << 20)
        assert open_fds() >= before + 2
        del stream

    before = open_fds()
    asyncio.run(drop())
    assert open_fds() == before
