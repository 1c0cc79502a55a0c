"""``bai admin keypair ...`` end to end, and what a deactivated key then sees."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from conftest import RunningServer

pytestmark = pytest.mark.sandbox

BAI = [sys.executable, "-m", "bai.client.cli.main"]


@pytest.fixture
def server(bai_server: RunningServer) -> RunningServer:
    """The run's embedded server (tests/conftest.py): a broken conftest fails these tests."""
    return bai_server


def bai(server: Any, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BAI, *args], env=env or server.env, capture_output=True, text=True, timeout=90, check=False)


def as_keypair(server: Any, created: dict[str, Any]) -> dict[str, str]:
    return {
        **server.env,
        "BACKEND_ACCESS_KEY": created["access_key"],
        "BACKEND_SECRET_KEY": created["secret_key"],
    }


def test_keypair_lifecycle(server: Any) -> None:
    made = bai(server, "admin", "keypair", "create", "--user-id", "e2e-user", "--concurrency", "2", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    access_key = created["access_key"]
    assert len(access_key) == 20 and len(created["secret_key"]) == 40
    assert (created["user_id"], created["is_admin"], created["concurrency_limit"]) == ("e2e-user", False, 2)

    listed = json.loads(bai(server, "admin", "keypair", "list", "--json").stdout)
    assert {item["access_key"]: item["is_active"] for item in listed}[access_key] is True
    assert "secret_key" not in json.dumps(listed)

    user_env = as_keypair(server, created)
    assert bai(server, "auth-test", env=user_env).returncode == 0

    assert bai(server, "admin", "keypair", "deactivate", access_key).returncode == 0
    refused = bai(server, "auth-test", env=user_env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ")
    assert len(refused.stderr.splitlines()) == 1

    assert bai(server, "admin", "keypair", "activate", access_key).returncode == 0
    assert bai(server, "auth-test", env=user_env).returncode == 0

    assert bai(server, "admin", "keypair", "delete", access_key).returncode == 0
    listed = json.loads(bai(server, "admin", "keypair", "list", "--json").stdout)
    assert access_key not in {item["access_key"] for item in listed}
    assert bai(server, "auth-test", env=user_env).returncode == 1


def test_create_prints_the_secret_once_and_list_is_a_table(server: Any) -> None:
    made = bai(server, "admin", "keypair", "create")
    assert made.returncode == 0, made.stderr
    assert "secret key" in made.stdout
    table = bai(server, "admin", "keypair", "list")
    assert table.returncode == 0, table.stderr
    assert server.access_key in table.stdout


def test_a_user_keypair_cannot_administer(server: Any) -> None:
    created = json.loads(bai(server, "admin", "keypair", "create", "--json").stdout)
    result = bai(server, "admin", "keypair", "list", env=as_keypair(server, created))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_a_keypair_can_be_made_to_expire(server: Any) -> None:
    result = bai(server, "admin", "keypair", "create", "--user-id", "temp", "--expires-in-days", "1", "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["expires_at"] is not None
    bad = bai(server, "admin", "keypair", "create", "--expires-in-days", "0")
    assert bad.returncode != 0 and "expires-in-days" in bad.stderr
