"""``bai ps / info / rm / restart / interrupt / auth-test / version`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer

pytestmark = pytest.mark.sandbox

BAI = [sys.executable, "-m", "bai.client.cli.main"]


@pytest.fixture
def server(bai_server: RunningServer) -> RunningServer:
    """The run's embedded server (tests/conftest.py): a broken conftest fails these tests."""
    return bai_server


def bai(server: Any, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BAI, *args], env=server.env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def name(server: Any) -> Iterator[str]:
    """A running session of the test's own."""
    session_name = f"cli-{uuid.uuid4().hex[:8]}"
    started = bai(server, "run", "python", "-c", "x = 1", "--name", session_name)
    assert started.returncode == 0, started.stderr
    yield session_name
    bai(server, "rm", session_name)


def test_ps_json_lists_the_session(server: Any, name: str) -> None:
    result = bai(server, "ps", "--json")
    assert result.returncode == 0, result.stderr
    items = {item["sessionName"]: item for item in json.loads(result.stdout)}
    assert items[name]["status"] == "RUNNING"
    assert items[name]["image"] == "python"
    assert items[name]["numQueriesExecuted"] == 1


def test_ps_prints_a_table(server: Any, name: str) -> None:
    result = bai(server, "ps")
    assert result.returncode == 0, result.stderr
    assert "name" in result.stdout and "status" in result.stdout
    assert name in result.stdout


def test_info(server: Any, name: str) -> None:
    table = bai(server, "info", name)
    assert table.returncode == 0, table.stderr
    assert name in table.stdout and "RUNNING" in table.stdout
    details = json.loads(bai(server, "info", name, "--json").stdout)
    assert (details["sessionName"], details["image"], details["status"]) == (name, "python", "RUNNING")


def test_rm_prints_the_usage(server: Any, name: str) -> None:
    result = bai(server, "rm", name)
    assert result.returncode == 0, result.stderr
    for label in ("CPU time", "memory peak", "IO read", "IO written", "scratch size"):
        assert label in result.stdout
    assert "TERMINATED" in bai(server, "info", name).stdout


def test_rm_json(server: Any, name: str) -> None:
    result = bai(server, "rm", name, "--json")
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)
    assert entry["name"] == name
    assert entry["stats"]["version"] == 2
    assert entry["stats"]["status"] == "terminated"
    assert entry["stats"]["cpu_used"]["unit_hint"] == "msec"


def test_restart_forgets_the_state(server: Any, name: str) -> None:
    result = bai(server, "restart", name)
    assert result.returncode == 0, result.stderr
    after = bai(server, "run", "python", "-c", "print(x)", "--name", name)
    assert after.returncode == 1
    assert "NameError" in after.stderr


def test_interrupt(server: Any, name: str) -> None:
    result = bai(server, "interrupt", name)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"interrupted {name}\n"


@pytest.mark.parametrize("command", ["info", "rm", "restart", "interrupt"])
def test_an_unknown_session_is_one_clean_error_line(server: Any, command: str) -> None:
    result = bai(server, command, "no-such-session-xyz")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    named = "no-such-session-xyz: " if command == "rm" else ""  # rm names which of its sessions failed
    assert result.stderr == f"error: {named}no such session: no-such-session-xyz\n", result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_auth_test_and_version(server: Any) -> None:
    auth = bai(server, "auth-test")
    assert auth.returncode == 0, auth.stderr
    assert server.access_key in auth.stdout
    version = bai(server, "version")
    assert version.returncode == 0, version.stderr
    assert "server: API v8.20240915" in version.stdout
