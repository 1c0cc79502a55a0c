"""A manager that starts again takes back the sessions an earlier run of it left RUNNING
(bai.manager.sessions.recover): each is live at once, and its agent's first heartbeat
confirms it or ends it; an agent that never comes back loses it. An agent that restarts
under the manager (a new boot id) loses the sessions it no longer lists. On the local
backend, whose sandboxes die with the agent; the docker backend's re-attach is in
test_docker_reattach.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.apiclient import SignedClient
from tests.capabilities import require_or_skip
from tests.conftest import ServerThread, sandbox_unavailable
from tests.integration.test_cluster import Cluster, ManagerThread, cluster, start_agent
from tests.waiting import wait_for

pytestmark = pytest.mark.sandbox
__all__ = ["cluster"]  # the fixture, from test_cluster


def _left_running(data_dir: Path, name: str) -> str:
    """A server that stops as if it crashed: the manager leaves its sessions' rows RUNNING
    (keep_sessions); the local agent's sandboxes die with it. Returns the session's id."""
    first = ServerThread(data_dir)
    running = first.start()
    first.server.manager.config.keep_sessions = True
    with SignedClient(running.endpoint, running.access_key, running.secret_key) as api:
        assert api.post("/session", {"image": "python", "name": name}).status_code == 201
        session_id: str = api.get(f"/session/{name}").json()["sessionId"]
    first.stop()
    return session_id


def test_a_session_whose_sandbox_died_with_the_server_ends_at_the_next_start(tmp_path: Path) -> None:
    if reason := sandbox_unavailable():
        require_or_skip("sandbox", reason)
    session_id = _left_running(tmp_path, "crashed")
    row = sqlite3.connect(tmp_path / "bai.sqlite3").execute(
        "select status from sessions where id = ?", (session_id,)
    ).fetchone()
    assert row == ("RUNNING",)
    second = ServerThread(tmp_path)
    again = second.start()
    try:
        with SignedClient(again.endpoint, again.access_key, again.secret_key) as api:
            assert wait_for(lambda: api.get("/session/crashed").json()["status"] == "ERROR")
            info = api.get("/session/crashed").json()
            assert info["statusInfo"] == "sandbox-lost: its agent restarted without it"
            assert api.post("/session", {"image": "python", "name": "crashed"}).status_code == 201  # the name is free
    finally:
        second.stop()


def test_a_session_whose_agent_never_returns_is_lost(tmp_path: Path) -> None:
    if reason := sandbox_unavailable():
        require_or_skip("sandbox", reason)
    session_id = _left_running(tmp_path, "stranded")
    with sqlite3.connect(tmp_path / "bai.sqlite3") as db:  # as if it ran on an agent that is gone for good
        db.execute("update sessions set agent_id = 'gone-for-good' where id = ?", (session_id,))
    second = ServerThread(tmp_path, agent_lost_after_s=30.0)
    again = second.start()
    try:
        with SignedClient(again.endpoint, again.access_key, again.secret_key) as api:
            info = api.get("/session/stranded").json()
            assert info["status"] == "RUNNING"  # taken back, waiting for its agent
            sessions = second.server.manager.sessions
            assert sessions.state.unconfirmed == {session_id: "gone-for-good"}
            again.call(sessions.expire_unconfirmed(29.0))  # too early: nothing happens
            assert api.get("/session/stranded").json()["status"] == "RUNNING"
            again.call(sessions.expire_unconfirmed(0.0))  # as the agent watch does once 30 s passed
            info = api.get("/session/stranded").json()
            assert (info["status"], info["statusInfo"]) == ("ERROR", "agent-lost")
    finally:
        second.stop()


@pytest.mark.parametrize("cluster", [{"agent_lost_after_s": 30.0}], indirect=True)
def test_an_agent_that_restarts_without_its_sessions_loses_them(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.api
    assert wait_for(lambda: api.post("/session", {"image": "python", "name": "on-node"}).status_code == 201)
    assert api.run("on-node", "print(1)")["status"] == "finished"
    cluster.agent.kill()  # its sandboxes die with it (local backend)
    cluster.agent.wait(10)
    if cluster.agent.stderr is not None:
        cluster.agent.stderr.close()
    cluster.agent = start_agent(cluster, tmp_path)  # back before the manager counts it lost
    assert wait_for(lambda: api.get("/session/on-node").json()["status"] == "ERROR")
    info = api.get("/session/on-node").json()
    assert info["statusInfo"] == "sandbox-lost: its agent restarted without it", info
    assert wait_for(lambda: api.post("/session", {"image": "python", "name": "after"}).status_code == 201)
    assert api.run("after", "print(2)")["status"] == "finished"


@pytest.mark.parametrize("cluster", [{"agent_lost_after_s": 10.0, "keep_sessions": True}], indirect=True)
def test_sessions_outlive_a_restart_of_the_manager(cluster: Cluster, tmp_path: Path) -> None:
    """A cluster's manager stops (leaving sessions to their agents) and starts again on the
    same data dir and port: the agent's next heartbeat confirms its sessions, which go on
    with their state (the local backend: the agent process kept them)."""
    api = cluster.api
    assert wait_for(lambda: api.post("/session", {"image": "python", "name": "steady"}).status_code == 201)
    assert api.run("steady", "x = 41")["status"] == "finished"
    port = cluster.manager.api.port
    cluster.manager.stop()
    api.close()
    new = ManagerThread(tmp_path / "manager", cluster.secret, 10.0, port)
    new.thread.start()
    creds = new.call(new._start(tmp_path / "manager"))
    cluster.manager = new
    cluster.api = again = SignedClient(creds.endpoint, creds.access_key, creds.secret_key)
    assert again.get("/session/steady").json()["status"] == "RUNNING"  # taken back at once
    assert wait_for(lambda: new.manager.agents.get("node-1") is not None)
    assert wait_for(lambda: not new.manager.sessions.state.unconfirmed)  # the heartbeat confirmed it
    assert again.get("/session/steady").json()["status"] == "RUNNING"
    result = again.run("steady", "print(x + 1)")
    assert result["console"] == [["stdout", "42\n"]], result
