"""``GET /environments`` and ``bai env list``: what the server's agents offer, with why
not; ``bai run`` of an environment the agent knows but has not built says how to build it.

The server runs the local backend on a catalog of this module's own, so that what is
available does not depend on what this host has built: ``shell:bash`` (bash: available),
``tiny:1`` (a venv nobody built) and ``ghost:0`` (a compiler that does not exist)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, ServerThread

from bai.client import APIConfig, Session
from tests.agent_sandbox import sandbox_unavailable
from tests.apiclient import SignedClient
from tests.integration.test_agent_environments import CATALOG  # a built one, one unbuildable, one REPL

REASON = sandbox_unavailable()
pytestmark = [pytest.mark.sandbox, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

BAI = [sys.executable, "-m", "bai.client.cli.main"]
NOT_BUILT = "not built: run `bai env build tiny:1`"



@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("catalog")
    catalog = base / "catalog.toml"
    catalog.write_text(CATALOG)
    with pytest.MonkeyPatch.context() as patch:  # read by the agent's settings, once, at its start
        patch.setenv("BAI_AGENT_ENVIRONMENT_CATALOG", str(catalog))
        patch.setenv("BAI_AGENT_ENVIRONMENTS_BASE", str(base / "built"))
        thread = ServerThread(base / "data", backend="local")  # type: ignore[arg-type]
    running = thread.start()
    try:
        yield running
    finally:
        thread.stop()


def bai(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BAI, *args], env=server.env, capture_output=True, text=True, timeout=90, check=False)


def test_the_route_lists_what_the_agents_offer_and_why_not(server: RunningServer) -> None:
    with SignedClient(server.endpoint, server.access_key, server.secret_key) as api:
        answer = api.get("/environments")
    assert answer.status_code == 200, answer.text
    rows = {(row["name"], row["tag"]): row for row in answer.json()["items"]}
    assert list(rows) == [("ghost", "0"), ("shell", "bash"), ("tiny", "1")]
    assert rows["shell", "bash"] == {"name": "shell", "tag": "bash", "available": True, "agents": ["embedded"],
                                     "unavailable": {}}  # fmt: skip
    assert rows["tiny", "1"]["available"] is False and rows["tiny", "1"]["agents"] == []
    assert rows["tiny", "1"]["unavailable"] == {"embedded": NOT_BUILT}
    assert rows["ghost", "0"]["unavailable"]["embedded"].startswith("no /nonexistent/ghostc on PATH")


def test_a_known_environment_that_is_not_built_is_refused_with_the_remedy(server: RunningServer) -> None:
    with SignedClient(server.endpoint, server.access_key, server.secret_key) as api:
        refused = api.post("/session", {"image": "tiny", "name": "env-not-built"})
        unknown = api.post("/session", {"image": "cobol", "name": "env-unknown"})
    assert refused.status_code == 400, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/invalid-api-params")
    assert problem["msg"] == f"image: 'tiny' is not available (agent embedded): {NOT_BUILT}"
    assert unknown.status_code == 400 and "unknown environment 'cobol'" in unknown.json()["msg"]


def test_bai_env_list_asks_the_server(server: RunningServer) -> None:
    listed = bai(server, "env", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["tiny"]["unavailable"] == {"embedded": NOT_BUILT} and rows["shell"]["agents"] == ["embedded"]
    table = bai(server, "env", "list")
    assert table.returncode == 0, table.stderr
    assert "shell" in table.stdout and NOT_BUILT in " ".join(table.stdout.split())
    with Session(APIConfig.from_env(server.env)) as api:
        assert [(item.name, item.available) for item in api.list_environments()] == [
            ("ghost", False), ("shell", True), ("tiny", False),
        ]  # fmt: skip


def test_bai_env_list_local_still_describes_this_host(server: RunningServer, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    local = bai(server, "env", "list", "--local", "--json", "--catalog", str(catalog), "--base", str(tmp_path))
    assert local.returncode == 0, local.stderr
    assert {row["name"]: row["reason"] for row in json.loads(local.stdout)}["tiny"] == NOT_BUILT
    misused = bai(server, "env", "list", "--base", str(tmp_path))
    assert misused.returncode == 2 and "use them with --local" in misused.stderr


def test_bai_run_says_how_to_build_it(server: RunningServer) -> None:
    out = bai(server, "run", "tiny", "-c", "print(1)")
    assert out.returncode == 1
    assert NOT_BUILT in out.stderr and "unknown environment" not in out.stderr, out.stderr
