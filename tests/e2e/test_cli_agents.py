"""``GET /admin/agents`` and ``bai admin agent list``: the embedded agent with its
capacity, its load and its warm pool."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.apiclient import SignedClient
from tests.waiting import until

pytestmark = pytest.mark.sandbox

BAI = [sys.executable, "-m", "bai.client.cli.main"]


def bai(server: Any, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BAI, *args], env=env or server.env, capture_output=True, text=True, timeout=90, check=False)


def test_agents_show_load_and_pool(api: SignedClient, bai_server: Any) -> None:
    name = f"ag-{uuid.uuid4().hex[:6]}"
    assert api.post("/session", {"image": "python", "name": name,
                                 "config": {"resources": {"cpu": "0.5", "mem": "256m"}}}).status_code == 201
    try:
        # the pool refills in the background and is reported with the next heartbeat
        bai_server.call(_heartbeat(bai_server))
        listed = api.get("/admin/agents")
        assert listed.status_code == 200, listed.text
        (agent,) = [a for a in listed.json()["items"] if a["agent_id"] == "embedded"]
        assert agent["status"] == "ALIVE" and agent["backend"] == "local"
        assert "python" in agent["environments"]
        assert agent["sessions"] >= 1
        assert float(agent["occupied"]["cpu"]) >= 0.5 and int(agent["occupied"]["mem"]) >= 256 * 2**20
        assert float(agent["capacity"]["cpu"]) > float(agent["occupied"]["cpu"])
        assert set(agent["pool"]) <= {"python"}
        assert 0 <= agent["last_heartbeat_s"] < 60

        out = bai(bai_server, "admin", "agent", "list", "--json")
        assert out.returncode == 0, out.stderr
        assert [a["agent_id"] for a in json.loads(out.stdout)] == ["embedded"]
        table = bai(bai_server, "admin", "agent", "list")
        assert table.returncode == 0, table.stderr
        assert "embedded" in table.stdout and "ALIVE" in table.stdout and "GiB" in table.stdout
    finally:
        api.delete(f"/session/{name}")


async def _heartbeat(bai_server: Any) -> None:
    server = bai_server.server
    await until(lambda: server.agent.info().pool.get("python"), what="the refill the create started")
    server.manager.agent_heartbeat(server.agent.info())


def test_agents_need_an_admin(api: SignedClient) -> None:
    created = api.post("/admin/keypairs", {"user_id": f"u-{uuid.uuid4().hex[:6]}"}).json()
    user = SignedClient(api.endpoint, created["access_key"], created["secret_key"])
    try:
        r = user.get("/admin/agents")
        assert r.status_code == 403 and r.json()["type"].endswith("/insufficient-privilege")
    finally:
        user.close()
        api.delete(f"/admin/keypairs/{created['access_key']}")
