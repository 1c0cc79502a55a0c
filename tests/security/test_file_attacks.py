"""File transfers against a hostile session (the Judge0 escapes, CVE-2024-28185 and
CVE-2024-28189: the host followed a link the sandbox planted in its work dir).

The session plants links to host files and dirs (/etc/passwd, /root, a dir outside
any sandbox, another session's file), a link as a parent directory, a fifo, a link
loop, and hard links; swaps a directory for a link in a loop while we upload. Each
upload, download and listing through such a path is refused with a 400 naming the
path (or a 404), nothing hangs, and the host target is unchanged (type, mode, owner,
content; a directory gains no entry). Each on both backends (``[local]``, ``[docker]``):
the docker agent reads and writes the container's scratch dir from the host as the local
one does."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bai.agent import files
from tests.apiclient import SignedClient, download, stdout_of, tars_of, upload
from tests.conftest import RunningServer
from tests.waiting import wait_for

pytestmark = [pytest.mark.sandbox, pytest.mark.backends]


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each attack against openat2 and against the walk used where the kernel lacks it
    (the embedded server runs in this process)."""
    if request.param == "walk":
        monkeypatch.setattr(files, "_openat2_works", False)
    return str(request.param)


def new_session(api: SignedClient) -> tuple[str, str]:
    name = f"fa-{uuid.uuid4().hex[:8]}"
    r = api.post("/session", {"image": "python", "name": name})
    assert r.status_code == 201, r.text
    return name, api.get(f"/session/{name}").json()["sessionId"]


@pytest.fixture
def session(api: SignedClient) -> Iterator[tuple[str, str]]:
    name, sid = new_session(api)
    yield name, sid
    api.delete(f"/session/{name}")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory no sandbox can see, writable by anyone (so only the agent's
    rules, not permissions, keep a file out of it)."""
    path = tmp_path / "outside"
    path.mkdir()
    path.chmod(0o777)
    (path / "keep.txt").write_text("host data\n")
    return path


def plant(api: SignedClient, name: str, code: str) -> None:
    result = api.run(name, "import os\n" + code)
    assert result["status"] == "finished" and result["exitCode"] == 0, result


def refused(response: Any, path: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert repr(path) in response.json()["msg"] or path in response.json()["msg"], response.json()


def fingerprint(path: Path) -> tuple[Any, ...]:
    info = os.lstat(path)
    content = None if stat.S_ISDIR(info.st_mode) else hashlib.sha256(path.read_bytes()).hexdigest()
    return (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, content)


def host_state(*paths: Path) -> list[Any]:
    return [(fingerprint(p), sorted(os.listdir(p)) if p.is_dir() else None) for p in paths]


def test_a_link_to_etc_passwd_is_never_read_nor_written(
    api: SignedClient, session: tuple[str, str], outside: Path
) -> None:
    """Reads go through a link to the real /etc/passwd; the write goes through a link
    to a copy of it outside any sandbox, so that a regression fails this test without
    damaging the host that runs it."""
    name, _ = session
    decoy = outside / "passwd"
    decoy.write_bytes(Path("/etc/passwd").read_bytes())
    before = host_state(Path("/etc/passwd"), Path("/etc"), decoy, outside)
    plant(api, name, f"os.symlink('/etc/passwd', '/home/work/passwd')\nos.symlink({str(decoy)!r}, '/home/work/decoy')")
    r = upload(api, name, [("decoy", b"root::0:0::/root:/bin/sh\n")])
    refused(r, "decoy")
    assert "symbolic link" in r.json()["msg"]
    refused(download(api, name, ["passwd"]), "passwd")
    refused(api.get(f"/session/{name}/files?path=passwd"), "passwd")
    assert host_state(Path("/etc/passwd"), Path("/etc"), decoy, outside) == before


@pytest.mark.parametrize("target", ["/etc", "/root", "OUTSIDE"])
def test_a_linked_parent_directory_is_refused(
    api: SignedClient, session: tuple[str, str], outside: Path, target: str
) -> None:
    """``work/dir -> /etc``, then upload ``dir/...``. In /etc and /root the names written
    are fresh ones (a regression adds a stray file, removed below, and fails the test);
    in the outside dir, an existing file is the target too."""
    name, _ = session
    host = outside if target == "OUTSIDE" else Path(target)
    fresh = f"bai-file-attack-{uuid.uuid4().hex[:8]}"
    paths = [f"dir/{fresh}", f"dir/{fresh}-sub/deeper.txt"] + (["dir/keep.txt"] if host == outside else [])
    kept = [outside / "keep.txt"] if host == outside else []
    before = host_state(host, *kept)
    plant(api, name, f"os.symlink({str(host)!r}, '/home/work/dir')")
    try:
        for path in paths:
            refused(upload(api, name, [(path, b"pwned\n")]), path)
        refused(download(api, name, ["dir"]), "dir")
        refused(download(api, name, ["dir/passwd" if host != outside else "dir/keep.txt"]), "dir/")
        refused(api.get(f"/session/{name}/files?path=dir"), "dir")
        assert host_state(host, *kept) == before
    finally:
        for leftover in (host / fresh, host / f"{fresh}-sub" / "deeper.txt", host / f"{fresh}-sub"):
            if leftover.is_dir():
                leftover.rmdir()
            elif leftover.exists():
                leftover.unlink()


def test_a_link_to_another_sessions_file(
    api: SignedClient, bai_server: RunningServer, session: tuple[str, str]
) -> None:
    name, _ = session
    victim, victim_id = new_session(api)
    try:
        assert upload(api, victim, [("secret.txt", b"victim's secret\n")]).status_code == 204
        victim_dir = bai_server.server.agent.backend.sandboxes[victim_id].work_dir().path
        secret = victim_dir / "secret.txt"
        before = host_state(secret, victim_dir)
        plant(
            api, name, f"os.symlink({str(secret)!r}, '/home/work/s')\nos.symlink({str(victim_dir)!r}, '/home/work/v')"
        )
        refused(upload(api, name, [("s", b"overwritten")]), "s")
        refused(upload(api, name, [("v/secret.txt", b"overwritten")]), "v/secret.txt")
        refused(download(api, name, ["s"]), "s")
        refused(download(api, name, ["v/secret.txt"]), "v/secret.txt")
        assert host_state(secret, victim_dir) == before
        assert stdout_of(api.run(victim, "print(open('/home/work/secret.txt').read(), end='')")) == "victim's secret\n"
    finally:
        api.delete(f"/session/{victim}")


def test_links_inside_a_downloaded_tree_are_stored_not_followed(api: SignedClient, session: tuple[str, str]) -> None:
    name, _ = session
    plant(
        api,
        name,
        (
            "os.makedirs('/home/work/t/in')\n"
            "os.symlink('/etc/shadow', '/home/work/t/shadow')\n"
            "os.symlink('/root', '/home/work/t/root')\n"
            "os.symlink('/', '/home/work/t/in/slash')\n"
            "os.mkfifo('/home/work/t/in/fifo')\n"
            "open('/home/work/t/in/ok.txt', 'w').write('ok')\n"
        ),
    )
    started = time.monotonic()
    tar = tars_of(download(api, name, ["t"]))[0]
    assert time.monotonic() - started < 10  # the fifo was not opened
    members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"t", "t/in", "t/in/ok.txt", "t/in/slash", "t/root", "t/shadow"}
    assert members["t/shadow"].issym() and members["t/shadow"].linkname == "/etc/shadow"
    assert members["t/root"].issym() and members["t/in/slash"].issym()
    assert all(m.size == 0 for n, m in members.items() if n != "t/in/ok.txt")


def test_a_fifo_is_refused_and_nothing_hangs(api: SignedClient, session: tuple[str, str]) -> None:
    name, _ = session
    plant(
        api,
        name,
        "os.mkfifo('/home/work/fifo')\nos.symlink('loop-b', '/home/work/loop-a')\n"
        "os.symlink('loop-a', '/home/work/loop-b')",
    )
    started = time.monotonic()
    r = download(api, name, ["fifo"])
    refused(r, "fifo")
    assert "not a regular file" in r.json()["msg"]
    r = upload(api, name, [("fifo", b"data")])
    refused(r, "fifo")
    assert "special file" in r.json()["msg"]
    plant(api, name, "import socket\nsocket.socket(socket.AF_UNIX).bind('/home/work/sock')")
    refused(download(api, name, ["sock"]), "sock")
    refused(upload(api, name, [("sock", b"data")]), "sock")
    refused(download(api, name, ["loop-a"]), "loop-a")
    refused(upload(api, name, [("loop-a/x", b"x")]), "loop-a/x")
    assert time.monotonic() - started < 10
    entries = {e["filename"]: e for e in json.loads(api.get(f"/session/{name}/files").json()["files"])}
    assert entries["fifo"]["type"] == "other" and entries["loop-a"]["type"] == "link"


def test_hard_links(api: SignedClient, session: tuple[str, str]) -> None:
    """A host file cannot be hard-linked in (another file system); a hard link among the
    session's own files is replaced by an upload, never written through."""
    name, _ = session
    out = stdout_of(
        api.run(
            name,
            (
                "import errno, os\n"
                "try:\n    os.link('/etc/passwd', '/home/work/hl'); print('linked')\n"
                "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
                "open('/home/work/a', 'w').write('original')\n"
                "os.link('/home/work/a', '/home/work/b')\n"
            ),
        )
    )
    assert out.strip() in ("EXDEV", "EPERM")
    assert download(api, name, ["hl"]).status_code == 404
    assert upload(api, name, [("b", b"uploaded")]).status_code == 204
    out = stdout_of(api.run(name, "print(open('/home/work/a').read(), open('/home/work/b').read())"))
    assert out == "original uploaded\n"


def test_swapping_a_directory_for_a_link_during_uploads(
    api: SignedClient, session: tuple[str, str], outside: Path
) -> None:
    """The session flips ``d`` between a directory and a link to a host dir as fast as
    it can while we upload into ``d``: every upload lands inside /home/work or is refused."""
    name, _ = session
    before = host_state(outside)
    flipper = (
        "import os, time\n"
        "open('/home/work/flipping', 'w').close()\n"
        "end = time.time() + 15\n"
        "while time.time() < end:\n"
        "    for step in (lambda: os.rename('/home/work/d', '/home/work/d-old'),\n"
        f"                 lambda: os.symlink({str(outside)!r}, '/home/work/d'),\n"
        "                 lambda: time.sleep(0.003),\n"
        "                 lambda: os.unlink('/home/work/d'),\n"
        "                 lambda: os.rename('/home/work/d-old', '/home/work/d'),\n"
        "                 lambda: time.sleep(0.001)):\n"
        "        try:\n"
        "            step()\n"
        "        except OSError:\n"
        "            pass\n"
    )
    plant(
        api,
        name,
        f"import subprocess, sys\nos.mkdir('/home/work/d')\nsubprocess.Popen([sys.executable, '-c', {flipper!r}])\n",
    )
    wait_for(lambda: "flipping" in api.get(f"/session/{name}/files").text, what="the flipper to run")
    deadline = time.monotonic() + 10
    statuses: set[int] = set()
    tries = 0
    while time.monotonic() < deadline and not (tries >= 50 and {204, 400} <= statuses):
        r = upload(api, name, [("d/evil.txt", b"escaped\n")])
        statuses.add(r.status_code)
        tries += 1
        assert r.status_code in (204, 400, 404), r.text
    assert host_state(outside) == before
    assert not (outside / "evil.txt").exists()
    assert 400 in statuses, statuses  # the race was met: a link was seen on the way
