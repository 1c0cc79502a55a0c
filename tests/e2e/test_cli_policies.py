"""``bai admin policy ...`` and the keypair's resource policy, end to end."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.e2e.test_cli_admin import as_keypair, bai, server

pytestmark = pytest.mark.sandbox

__all__ = ["server"]  # the fixture, shared with test_cli_admin


def _policy_name() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def test_policy_lifecycle(server: Any) -> None:
    name = _policy_name()
    made = bai(
        server,
        "admin",
        "policy",
        "create",
        name,
        "--idle-timeout",
        "600",
        "--max-scratch",
        "1g",
        "--session-slot",
        "cpu=2",
        "--session-slot",
        "mem=4g",
        "--total-slot",
        "cpu=4",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert (created["name"], created["idle_timeout_s"], created["max_scratch_bytes"]) == (name, 600.0, 2**30)
    assert created["max_session_slots"] == {"cpu": "2", "mem": str(4 * 2**30)}
    assert created["total_resource_slots"] == {"cpu": "4"}

    updated = bai(
        server,
        "admin",
        "policy",
        "update",
        name,
        "--idle-timeout",
        "none",
        "--max-pids",
        "64",
        "--total-slot",
        "none",
        "--json",
    )
    assert updated.returncode == 0, updated.stderr
    changed = json.loads(updated.stdout)
    assert (changed["idle_timeout_s"], changed["max_pids"], changed["total_resource_slots"]) == (None, 64, {})
    assert changed["max_scratch_bytes"] == 2**30

    listed = {p["name"]: p for p in json.loads(bai(server, "admin", "policy", "list", "--json").stdout)}
    assert listed[name]["max_pids"] == 64 and "default" in listed
    table = bai(server, "admin", "policy", "list")
    assert table.returncode == 0 and name in table.stdout and "1.0 GiB" in table.stdout

    assert bai(server, "admin", "policy", "delete", name).returncode == 0
    assert name not in bai(server, "admin", "policy", "list").stdout


def test_keypairs_get_and_change_their_policy(server: Any) -> None:
    name = _policy_name()
    assert bai(server, "admin", "policy", "create", name, "--max-lifetime", "3600").returncode == 0
    made = bai(server, "admin", "keypair", "create", "--user-id", "pol-user", "--policy", name, "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["resource_policy"] == name
    access_key = created["access_key"]

    in_use = bai(server, "admin", "policy", "delete", name)
    assert in_use.returncode == 1
    assert in_use.stderr.startswith("error: ") and "in use by 1 keypair(s)" in in_use.stderr

    moved = bai(server, "admin", "keypair", "set-policy", access_key, "default")
    assert moved.returncode == 0, moved.stderr
    listed = {k["access_key"]: k for k in json.loads(bai(server, "admin", "keypair", "list", "--json").stdout)}
    assert listed[access_key]["resource_policy"] == "default"
    assert "policy" in bai(server, "admin", "keypair", "list").stdout

    unknown = bai(server, "admin", "keypair", "set-policy", access_key, "no-such-policy")
    assert unknown.returncode == 1 and "no such resource policy" in unknown.stderr
    assert bai(server, "admin", "policy", "delete", name).returncode == 0
    bai(server, "admin", "keypair", "delete", access_key)


def test_bad_values_and_plain_keypairs_get_one_error_line(server: Any) -> None:
    bad = bai(server, "admin", "policy", "create", _policy_name(), "--exec-timeout", "soon")
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ") and "exec_timeout_s" in bad.stderr
    assert "Traceback" not in bad.stderr
    nothing = bai(server, "admin", "policy", "update", "default")
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr

    created = json.loads(bai(server, "admin", "keypair", "create", "--json").stdout)
    refused = bai(server, "admin", "policy", "list", env=as_keypair(server, created))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and len(refused.stderr.splitlines()) == 1
