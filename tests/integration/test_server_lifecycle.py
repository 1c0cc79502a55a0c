"""The embedded server as a whole: agent loss, restarts over the same data dir,
client.env."""

from __future__ import annotations

import stat
import time

import pytest

from tests.apiclient import SignedClient, stdout_of
from tests.capabilities import require_or_skip
from tests.conftest import RunningServer, ServerThread, sandbox_unavailable
from tests.waiting import wait_for

pytestmark = pytest.mark.sandbox

FAST_LOSS = {"heartbeat_interval_s": 0.1, "agent_lost_after_s": 0.5}


@pytest.mark.parametrize("fresh_server", [FAST_LOSS], indirect=True)
def test_the_manager_notices_an_agent_that_stops(fresh_server: RunningServer) -> None:
    with SignedClient(fresh_server.endpoint, fresh_server.access_key, fresh_server.secret_key) as api:
        assert api.post("/session", {"image": "python", "name": "on-agent"}).status_code == 201
        fresh_server.loop.call_soon_threadsafe(fresh_server.server.pause_heartbeats)
        assert wait_for(lambda: api.get("/session/on-agent").json()["status"] == "ERROR")
        info = api.get("/session/on-agent").json()
        assert info["statusInfo"] == "agent-lost"
        r = api.post("/session", {"image": "python", "name": "no-agent"})
        assert r.status_code == 400 and "no agent" in r.json()["msg"]
        fresh_server.loop.call_soon_threadsafe(fresh_server.server.resume_heartbeats)
        assert wait_for(lambda: api.post("/auth/test", {"echo": "x"}).status_code == 200)
        assert wait_for(lambda: api.post("/session", {"image": "python", "name": "back-again"}).status_code == 201)
        assert stdout_of(api.run("back-again", "print('ok')")) == "ok\n"


def test_a_second_start_reuses_the_data_dir_and_keypair(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if reason := sandbox_unavailable():
        require_or_skip("sandbox", reason)
    first = ServerThread(tmp_path)
    running = first.start()
    env_file = tmp_path / "client.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    text = env_file.read_text()
    assert f"export BACKEND_ACCESS_KEY={running.access_key}" in text
    assert f"export BACKEND_ENDPOINT={running.endpoint}" in text
    with SignedClient(running.endpoint, running.access_key, running.secret_key) as api:
        assert api.post("/session", {"image": "python", "name": "left-running"}).status_code == 201
    first.stop()

    second = ServerThread(tmp_path)
    again = second.start()
    try:
        assert (again.access_key, again.secret_key) == (running.access_key, running.secret_key)
        with SignedClient(again.endpoint, again.access_key, again.secret_key) as api:
            info = api.get("/session/left-running").json()
            assert info["status"] == "TERMINATED"  # the first server destroyed it on stop
            assert api.post("/session", {"image": "python", "name": "left-running"}).status_code == 201
    finally:
        second.stop()


def test_a_full_agent_queues_and_max_wait_times_out(fresh_server: RunningServer) -> None:
    with SignedClient(fresh_server.endpoint, fresh_server.access_key, fresh_server.secret_key) as api:
        cpus = fresh_server.server.agent.info().capacity["cpu"]
        big = api.post("/session", {"image": "python", "name": "takes-all", "config": {"resources": {"cpu": cpus}}})
        assert big.status_code == 201, big.text
        start = time.monotonic()
        waiting = api.post("/session", {"image": "python", "name": "waits", "maxWaitSeconds": 1})
        assert waiting.status_code == 201
        assert waiting.json()["status"] == "TIMEOUT"
        assert time.monotonic() - start >= 0.9  # it waited its second (no upper bound: a busy host is slow)
        assert api.get("/session/waits").json()["status"] == "PENDING"
        api.delete("/session/takes-all")
        assert wait_for(lambda: api.get("/session/waits").json()["status"] == "RUNNING")
        cancelled = api.post("/session", {"image": "python", "name": "never", "enqueueOnly": True,
                                          "config": {"resources": {"cpu": cpus}}})
        assert cancelled.json()["status"] == "PENDING"
        assert api.delete("/session/never").status_code == 200
        assert api.get("/session/never").json()["status"] == "CANCELLED"
