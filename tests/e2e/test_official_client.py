"""The official Backend.AI client 23.9.10, unchanged, against our server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.capabilities import needs

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = Path(os.environ.get("BAI_OFFICIAL_CLIENT", ROOT / ".venv-official" / "bin" / "backend.ai"))

pytestmark = [
    pytest.mark.official_client,
    pytest.mark.sandbox,
    needs("official_client",
          None if OFFICIAL.exists() else f"the official client is not at {OFFICIAL} (./dev test installs it)"),
]


def official(bai_server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(bai_server.env)
    env["HOME"] = str(bai_server.data_dir / "official-home")  # its config/cache dirs stay out of ours
    return subprocess.run([str(OFFICIAL), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_run_prints_the_answer(bai_server) -> None:
    result = official(bai_server, "run", "--rm", "python", "-c", "print(6*7)")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "42" in result.stdout.splitlines()


def test_run_rm_with_stats(bai_server) -> None:
    result = official(bai_server, "run", "--rm", "-s", "python", "-c", "sum(range(10**6))")
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "Statistics" in text and "cpu_used" in text and "mem" in text


def test_named_session_keeps_state(bai_server) -> None:
    assert official(bai_server, "run", "--name", "official-state", "python", "-c", "x = 20").returncode == 0
    result = official(bai_server, "run", "--name", "official-state", "--rm", "python", "-c", "print(x + 22)")
    assert "42" in result.stdout.splitlines(), result.stdout + result.stderr


def test_user_errors_reach_stderr(bai_server) -> None:
    result = official(bai_server, "run", "--rm", "python", "-c", "raise RuntimeError('visible')")
    assert "RuntimeError: visible" in result.stdout + result.stderr


def test_session_upload_ls_download(bai_server, tmp_path: Path) -> None:
    """``backend.ai session upload / ls / download``: aiohttp's multipart with
    percent-encoded names, a GET with a JSON body for ls and download."""
    assert official(bai_server, "run", "--name", "official-files", "python", "-c", "x = 1").returncode == 0
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a b.txt").write_text("from the official client\n")
    env = dict(bai_server.env, HOME=str(bai_server.data_dir / "official-home"))
    up = subprocess.run([str(OFFICIAL), "session", "upload", "official-files", "sub/a b.txt"], env=env, cwd=src,
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stdout + up.stderr
    listing = official(bai_server, "session", "ls", "official-files", "/home/work/sub")
    assert listing.returncode == 0 and "a b.txt" in listing.stdout, listing.stdout + listing.stderr
    dest = tmp_path / "dest"
    dest.mkdir()
    down = official(bai_server, "session", "download", "official-files", "sub/a b.txt", "--dest", str(dest))
    assert down.returncode == 0, down.stdout + down.stderr
    assert (dest / "a b.txt").read_text() == "from the official client\n"
    refused = official(bai_server, "session", "ls", "official-files", "/etc")
    assert refused.returncode != 0 and "not inside /home/work" in refused.stdout + refused.stderr
    official(bai_server, "session", "rm", "official-files")
