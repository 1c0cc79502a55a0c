"""Session files through the API on a real server with real sandboxes: upload,
download (multipart/mixed of tars) and listing; the path rules, the limits, a
transfer while a run is busy, another keypair's session; each on both backends
(``[local]``, ``[docker]``: the docker agent reads and writes the container's scratch dir
from the host). The attacks with planted links are in tests/security/test_file_attacks.py."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest

from tests.apiclient import SignedClient, download, following, stdout_of, tars_of, upload
from tests.capabilities import require_or_skip

pytestmark = [pytest.mark.sandbox, pytest.mark.backends]
MiB = 2**20


def new_session(api: SignedClient) -> str:
    name = f"f-{uuid.uuid4().hex[:8]}"
    r = api.post("/session", {"image": "python", "name": name})
    assert r.status_code == 201, r.text
    return name


@pytest.fixture
def session(api: SignedClient) -> Iterator[str]:
    name = new_session(api)
    yield name
    api.delete(f"/session/{name}")


def listing(api: SignedClient, name: str, path: str | None = None) -> dict[str, dict[str, Any]]:
    suffix = f"?path={path}" if path is not None else ""
    r = api.get(f"/session/{name}/files{suffix}")
    assert r.status_code == 200, r.text
    return {entry["filename"]: entry for entry in json.loads(r.json()["files"])}


def test_upload_lands_in_home_work_owned_by_the_session(api: SignedClient, session: str) -> None:
    r = upload(api, session, [("a.txt", b"alpha\n"), ("dir/sub/b.bin", bytes(range(256)) * 10)])
    assert r.status_code == 204, r.text
    out = stdout_of(
        api.run(
            session,
            (
                "import os\n"
                "print(open('/home/work/a.txt').read(), end='')\n"
                "print(len(open('/home/work/dir/sub/b.bin','rb').read()))\n"
                "for p in ('a.txt', 'dir', 'dir/sub', 'dir/sub/b.bin'):\n"
                "    st = os.stat('/home/work/' + p); print(p, st.st_uid == os.getuid(), oct(st.st_mode & 0o777))\n"
                "open('/home/work/dir/sub/b.bin', 'ab').write(b'x')\n"  # the session can change what it got
                "print(os.listdir('/home/work/dir/sub'))\n"
            ),
        )
    )
    assert out.splitlines() == [
        "alpha",
        "2560",
        "a.txt True 0o644",
        "dir True 0o755",
        "dir/sub True 0o755",
        "dir/sub/b.bin True 0o644",
        "['b.bin']",  # no temporary file left
    ]


def test_percent_encoded_names_are_decoded(api: SignedClient, session: str) -> None:
    assert upload(api, session, [("dir%2Fa%20b.txt", b"spaced")]).status_code == 204
    assert stdout_of(api.run(session, "print(open('/home/work/dir/a b.txt').read())")) == "spaced\n"


def test_upload_replaces_a_regular_file(api: SignedClient, session: str) -> None:
    assert upload(api, session, [("f", b"one")]).status_code == 204
    assert upload(api, session, [("f", b"two")]).status_code == 204
    assert stdout_of(api.run(session, "print(open('/home/work/f').read())")) == "two\n"


def test_download_round_trip_of_files_and_trees(api: SignedClient, session: str) -> None:
    big = os.urandom(3 * MiB)
    r = upload(api, session, [("top.txt", b"top"), ("tree/x.txt", b"x"), ("tree/deeper/big.bin", big)])
    assert r.status_code == 204, r.text
    api.run(session, "import os\nos.symlink('x.txt', '/home/work/tree/link')\nos.mkfifo('/home/work/tree/fifo')")
    r = download(api, session, ["top.txt", "tree"])
    assert r.status_code == 200, r.text
    first, second = tars_of(r)
    assert first.getnames() == ["top.txt"]
    member = first.extractfile("top.txt")
    assert member is not None and member.read() == b"top"
    names = second.getnames()
    assert sorted(names) == ["tree", "tree/deeper", "tree/deeper/big.bin", "tree/link", "tree/x.txt"]  # no fifo
    link = second.getmember("tree/link")
    assert link.issym() and link.linkname == "x.txt"  # stored as a link, not followed
    data = second.extractfile("tree/deeper/big.bin")
    assert data is not None and data.read() == big


def test_download_of_a_missing_file_is_404_and_a_dir_listing_describes_entries(api: SignedClient, session: str) -> None:
    r = download(api, session, ["nope.txt"])
    assert r.status_code == 404 and "nope.txt" in r.json()["msg"]
    upload(api, session, [("d/f.txt", b"12345")])
    api.run(session, "import os\nos.symlink('/etc/passwd', '/home/work/d/l')\nos.mkfifo('/home/work/d/p')")
    entries = listing(api, session, "d")
    assert set(entries) == {"f.txt", "l", "p"}
    assert entries["f.txt"]["type"] == "file" and entries["f.txt"]["size"] == 5
    assert entries["f.txt"]["mode"] == "-rw-r--r--"
    assert entries["l"]["type"] == "link" and entries["l"]["size"] == len("/etc/passwd")  # lstat, not followed
    assert entries["p"]["type"] == "other" and entries["p"]["mode"].startswith("p")
    root = api.get(f"/session/{session}/files").json()
    assert root["folder_path"] == "/home/work" and root["errors"] == ""
    assert "d" in {e["filename"] for e in json.loads(root["files"])}
    assert "d" in listing(api, session, "/home/work")  # the official CLI's default path


@pytest.mark.parametrize(
    "bad, why",
    [
        ("../etc/passwd", "not inside /home/work"),
        ("a/../../x", "not inside /home/work"),
        ("/etc/passwd", "not inside /home/work"),
        ("/home/work/x", "must be relative"),
        ("a\x00b", "NUL"),
        ("", "names no file"),
        ("./", "names no file"),
        ("%2e%2e%2fetc%2fpasswd", "not inside /home/work"),  # percent-encoded, as aiohttp sends names
        ("a%00b", "NUL"),
    ],
)
def test_bad_upload_paths_are_400_naming_the_path(api: SignedClient, session: str, bad: str, why: str) -> None:
    r = upload(api, session, [("fine.txt", b"ok"), (bad, b"evil")])
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["type"].endswith("/invalid-api-params")
    assert body["msg"].startswith("src: ") and why in body["msg"], body
    assert repr(unquote(bad)) in body["msg"]
    assert "fine.txt" not in listing(api, session)  # checked before anything was written


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", "x\x00"])
def test_bad_download_and_listing_paths_are_400(api: SignedClient, session: str, bad: str) -> None:
    r = api.get(f"/session/{session}/download", body={"files": [bad]})
    assert r.status_code == 400 and r.json()["msg"].startswith("files: "), r.text
    r = api.get(f"/session/{session}/files", body={"path": bad})
    assert r.status_code == 400 and r.json()["msg"].startswith("path: "), r.text


def test_parts_not_named_src_and_non_multipart_bodies_are_400(api: SignedClient, session: str) -> None:
    r = upload(api, session, [("a.txt", b"x")], name="file")
    assert r.status_code == 400 and r.json()["msg"].startswith("file: "), r.text
    r = api.post(f"/session/{session}/upload", {"src": "a.txt"})
    assert r.status_code == 400 and r.json()["msg"].startswith("body: "), r.text


@pytest.mark.parametrize("fresh_server", [{}], indirect=True)
def test_limits_on_count_file_size_and_request_size(fresh_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = fresh_server.server.manager.config
    monkeypatch.setattr(config, "upload_max_files", 3)
    monkeypatch.setattr(config, "upload_max_file_bytes", 2 * MiB)
    monkeypatch.setattr(config, "upload_max_request_bytes", 5 * MiB)
    monkeypatch.setattr(config, "download_max_bytes", 3 * MiB)
    with SignedClient(fresh_server.endpoint, fresh_server.access_key, fresh_server.secret_key) as api:
        name = new_session(api)
        r = upload(api, name, [(f"f{i}", b"x") for i in range(4)])
        assert r.status_code == 413 and r.json()["msg"].startswith("src: more than 3 files"), r.text
        r = upload(api, name, [("big", bytes(2 * MiB + 1))])
        assert r.status_code == 413 and "'big' is larger than" in r.json()["msg"], r.text
        r = upload(api, name, [("a", bytes(2 * MiB)), ("b", bytes(2 * MiB)), ("c", bytes(2 * MiB))])
        assert r.status_code == 413 and r.json()["msg"].startswith("body: "), r.text
        assert listing(api, name) == {}
        assert upload(api, name, [("a", bytes(2 * MiB)), ("b", bytes(2 * MiB))]).status_code == 204
        r = download(api, name, ["a", "b"])
        assert r.status_code == 413 and r.json()["msg"].startswith("files: "), r.text
        assert download(api, name, ["a"]).status_code == 200


def test_transfers_work_while_a_run_is_busy(api: SignedClient, session: str) -> None:
    """The run says it is busy and stays so until the test uploads ``release``."""
    code = "import os, time\nprint('busy', flush=True)\nwhile not os.path.exists('release'):\n    time.sleep(0.01)\n"
    busy = api.post(f"/session/{session}", {"mode": "query", "code": code + "print('done')"})
    answers = following(api, session, busy.json()["result"], until="busy")
    assert upload(api, session, [("during.txt", b"busy")]).status_code == 204
    assert "during.txt" in listing(api, session)
    tar = tars_of(download(api, session, ["during.txt"]))[0]
    member = tar.extractfile("during.txt")
    assert member is not None and member.read() == b"busy"
    assert upload(api, session, [("release", b"")]).status_code == 204
    answers += following(api, session, answers[-1])[1:]
    assert "".join(stdout_of(answer) for answer in answers) == "busy\ndone\n"


def test_another_keypairs_session_is_404(api: SignedClient, session: str) -> None:
    r = api.post("/admin/keypairs", {"user_id": f"u-{uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text  # created
    keys = r.json()
    other = SignedClient(api.endpoint, keys["access_key"], keys["secret_key"])
    try:
        assert upload(other, session, [("x", b"x")]).status_code == 404
        assert download(other, session, ["x"]).status_code == 404
        assert other.get(f"/session/{session}/files").status_code == 404
    finally:
        other.close()
    assert "x" not in listing(api, session)


@pytest.fixture
def small_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    from bai.agent import scratch

    if (reason := scratch.hostfile_unavailable()) is not None:
        require_or_skip("sandbox", f"hostfile scratch: {reason}")
    monkeypatch.setenv("BAI_AGENT_SCRATCH_SIZE", str(scratch.MIN_SCRATCH_BYTES))  # read by the embedded agent


def test_an_upload_past_the_scratch_cap_is_507_and_leaves_nothing(small_scratch: None, fresh_server: Any) -> None:
    with SignedClient(fresh_server.endpoint, fresh_server.access_key, fresh_server.secret_key) as api:
        name = new_session(api)
        r = upload(api, name, [("fits.bin", bytes(MiB)), ("huge.bin", bytes(12 * MiB))])
        assert r.status_code == 507, r.text
        body = r.json()
        assert body["type"].endswith("/insufficient-storage") and "'huge.bin'" in body["msg"], body
        out = stdout_of(api.run(name, "import os\nprint(sorted(os.listdir('/home/work')))"))
        assert out == "['fits.bin']\n"  # no partial file, no temporary
        assert upload(api, name, [("after.txt", b"room again")]).status_code == 204
