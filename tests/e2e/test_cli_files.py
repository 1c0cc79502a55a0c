"""``bai upload / download / ls`` end to end (the real ``bai`` in a subprocess), and the
SDK's transfers through the sync API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer

pytestmark = pytest.mark.sandbox

BAI = [sys.executable, "-m", "bai.client.cli.main"]


@pytest.fixture
def server(bai_server: RunningServer) -> RunningServer:
    """The run's embedded server (tests/conftest.py): a broken conftest fails these tests."""
    return bai_server


def bai(server: Any, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BAI, *args], env=server.env, capture_output=True, text=True, timeout=90, check=False, cwd=cwd
    )


@pytest.fixture
def name(server: Any) -> Iterator[str]:
    session_name = f"clif-{uuid.uuid4().hex[:8]}"
    started = bai(server, "run", "python", "-c", "x = 1", "--name", session_name)
    assert started.returncode == 0, started.stderr
    yield session_name
    bai(server, "rm", session_name)


def test_upload_ls_download_round_trip(server: Any, name: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text("print('main')\n")
    (src / "pkg" / "data.bin").write_bytes(os.urandom(5 * 2**20))
    up = bai(server, "upload", name, "main.py", "pkg/data.bin", cwd=src)
    assert up.returncode == 0, up.stderr
    assert up.stdout.splitlines() == ["/home/work/main.py", "/home/work/pkg/data.bin"]
    listing = bai(server, "ls", name, "--json")
    assert listing.returncode == 0, listing.stderr
    entries = {e["filename"]: e for e in json.loads(listing.stdout)["files"]}
    assert entries["main.py"]["type"] == "file" and entries["pkg"]["type"] == "dir"
    table = bai(server, "ls", name, "pkg")
    assert "data.bin" in table.stdout and "5.0 MiB" in table.stdout, table.stdout
    dest = tmp_path / "dest"
    down = bai(server, "download", name, "main.py", "pkg", "--dest", str(dest))
    assert down.returncode == 0, down.stderr
    assert (dest / "main.py").read_text() == "print('main')\n"
    assert (dest / "pkg" / "data.bin").read_bytes() == (src / "pkg" / "data.bin").read_bytes()


def test_download_skips_links_pointing_out_of_dest(server: Any, name: str, tmp_path: Path) -> None:
    run = bai(
        server,
        "run",
        "python",
        "--name",
        name,
        "-c",
        "import os\nos.makedirs('/home/work/t')\nopen('/home/work/t/ok', 'w').write('ok')\n"
        "os.symlink('/etc/passwd', '/home/work/t/abs')\nos.symlink('../../../x', '/home/work/t/up')\n"
        "os.symlink('ok', '/home/work/t/fine')",
    )
    assert run.returncode == 0, run.stderr
    down = bai(server, "download", name, "t", "--dest", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "t" / "ok").read_text() == "ok"
    assert (tmp_path / "t" / "fine").is_symlink()
    assert not (tmp_path / "t" / "abs").exists() and not (tmp_path / "t" / "up").is_symlink()
    assert "skipped t/abs" in down.stderr and "skipped t/up" in down.stderr


def test_errors_are_one_line(server: Any, name: str, tmp_path: Path) -> None:
    missing = bai(server, "download", name, "nope", "--dest", str(tmp_path))
    assert missing.returncode == 1 and "nope" in missing.stderr and "Traceback" not in missing.stderr
    outside = bai(server, "ls", name, "../etc")
    assert outside.returncode == 1 and "not inside /home/work" in outside.stderr
    (tmp_path / "f").write_text("x")
    other = tmp_path.parent / f"o-{uuid.uuid4().hex[:6]}"
    other.mkdir()
    (other / "g").write_text("y")
    bad = bai(server, "upload", name, str(other / "g"), cwd=tmp_path)
    assert bad.returncode != 0 and "not inside the base directory" in bad.stderr


def test_sdk_sync_transfers(server: Any, name: str, tmp_path: Path) -> None:
    from bai.client.config import APIConfig
    from bai.client.sync import Session

    (tmp_path / "a.txt").write_text("sdk")
    with Session(APIConfig.from_env(server.env)) as api:
        session = api.ComputeSession(name)
        assert session.upload([tmp_path / "a.txt"], basedir=tmp_path) == ["a.txt"]
        names = [f.filename for f in session.list_files(".").files]
        assert "a.txt" in names
        result = session.download(["a.txt"], tmp_path / "out")
        assert result.files == ["a.txt"] and result.skipped == []
    assert (tmp_path / "out" / "a.txt").read_text() == "sdk"
