"""Resource policies and per-session limits through the real API: ``config.limits``,
the admin routes, and the idle timeout and lifetime the manager enforces. On both backends
(``[local]``, ``[docker]``) but for the tests of the manager alone (``local_only``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.apiclient import SignedClient, following, stdout_of, upload
from tests.conftest import RunningServer
from tests.integration.test_events import Listener
from tests.integration.test_stream import open_ws
from tests.manual_clock import driving, nothing_in_flight, reap
from tests.waiting import HANG_S, wait_for

pytestmark = [pytest.mark.sandbox, pytest.mark.backends]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def user(api: SignedClient) -> Iterator[SignedClient]:
    """A fresh non-admin keypair on a fresh policy of its own (``policy`` attribute)."""
    policy = _name("pol")
    made = api.post(
        "/admin/resource-policies",
        {
            "name": policy,
            "maxSessionSlots": {"cpu": "1", "mem": "512m"},
            "totalResourceSlots": {"cpu": "2"},
            "max_pids": 128,
            "idle_timeout_s": 600,
            "max_session_lifetime_s": 900,
            "max_output_bytes": "1m",
        },
    )
    assert made.status_code == 201, made.text
    created = api.post("/admin/keypairs", {"user_id": "limits", "resourcePolicy": policy}).json()
    assert created["resource_policy"] == policy
    client = SignedClient(api.endpoint, created["access_key"], created["secret_key"])
    client.policy = policy  # type: ignore[attr-defined]
    yield client
    for item in client.get("/session").json()["items"]:
        client.delete(f"/session/{item['sessionId']}")
    client.close()
    api.delete(f"/admin/keypairs/{created['access_key']}")
    api.delete(f"/admin/resource-policies/{policy}")


def _create(client: SignedClient, name: str, **config: Any) -> Any:
    return client.post("/session", {"image": "python", "name": name, "config": config})


def _problem(response: Any, status: int, slug: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["type"].endswith("/" + slug)
    msg: str = response.json()["msg"]
    return msg


def test_the_effective_limits_reach_the_sandbox_and_the_info(user: SignedClient, bai_server: RunningServer) -> None:
    name = _name("lim")
    r = _create(
        user,
        name,
        resources={"mem": "256m"},
        limits={"pids": 64, "scratch": "64m", "execTimeout": 30, "idleTimeout": 120},
    )
    assert r.status_code == 201, r.text
    info = user.get(f"/session/{name}").json()
    assert info["limits"] == {
        "resourcePolicy": user.policy,  # type: ignore[attr-defined]
        "pids": 64,
        "scratchBytes": 64 * 2**20,
        "execTimeout": 30.0,
        "idleTimeout": 120.0,
        "maxLifetime": 900.0,
        "outputBytes": 2**20,
    }
    assert info["requestedSlots"] == {"cpu": "1", "mem": str(256 * 2**20)}
    spec = bai_server.server.agent.sessions[info["sessionId"]].spec
    assert (spec.exec_timeout_s, spec.scratch_bytes, spec.output_limit_bytes) == (30.0, 64 * 2**20, 2**20)
    assert spec.resources["pids"] == "64"
    assert bai_server.server.agent.sessions[info["sessionId"]].sandbox.limits.pids == 64
    assert stdout_of(user.run(name, "print('ok')")) == "ok\n"


def test_each_limit_takes_effect_through_the_api(user: SignedClient) -> None:
    """Not only the spec: the sandbox enforces what the policy and the request decided."""
    name = _name("eff")
    r = _create(user, name, resources={"mem": "256m"}, limits={"pids": 32, "scratch": "16m", "execTimeout": 1})
    assert r.status_code == 201, r.text
    # output: the policy's 1 MiB per run, then one marker
    flood = user.run(name, "import sys\nfor _ in range(3000):\n    sys.stdout.write('x' * 1023 + '\\n')\n")
    out = "".join(data for kind, data in flood["console"] if kind == "stdout")
    assert len(out.encode()) <= 2**20
    assert [kind for kind, data in flood["console"] if "output truncated" in data] == ["stderr"]
    assert flood["options"]["stats"]["output_truncated"] is True
    # scratch: 16 MiB, then ENOSPC
    fill = (
        "try:\n    open('/home/work/fill', 'wb').write(b'0' * (64 * 2**20))\n"
        "except OSError as e:\n    print(e.errno)\n"
    )
    assert stdout_of(user.run(name, fill)) == "28\n"
    user.run(name, "import os; os.remove('/home/work/fill')")
    # pids: 32 in the whole sandbox
    forks = (
        "import os, time\nkids = []\ntry:\n    for _ in range(100):\n        pid = os.fork()\n"
        "        if pid == 0:\n            time.sleep(5)\n            os._exit(0)\n        kids.append(pid)\n"
        "except OSError as e:\n    print('stopped', len(kids) < 32)\nfor pid in kids:\n    os.kill(pid, 9)\n"
        "    os.waitpid(pid, 0)\n"
    )
    assert stdout_of(user.run(name, forks)) == "stopped True\n"
    # exec timeout: 1 s
    slow = user.run(name, "import time\ntime.sleep(30)")
    assert slow["status"] == "exec-timeout"
    assert slow["options"]["stats"]["wall_ms"] >= 1000
    assert stdout_of(user.run(name, "print('still here')")) == "still here\n"


@pytest.mark.local_only(reason="refused by the manager: no sandbox is made")
def test_requests_beyond_the_policy_are_refused_naming_the_field(user: SignedClient) -> None:
    policy = user.policy  # type: ignore[attr-defined]
    msg = _problem(_create(user, _name("lim"), limits={"idleTimeout": 7200}), 400, "invalid-api-params")
    assert msg == f'config.limits.idleTimeout: 7200 s exceeds the keypair\'s resource policy "{policy}" (max 600 s)'
    msg = _problem(_create(user, _name("lim"), limits={"pids": 4096}), 400, "invalid-api-params")
    assert msg.startswith("config.limits.pids: 4096 exceeds")
    msg = _problem(_create(user, _name("lim"), resources={"cpu": 2}), 400, "invalid-api-params")
    assert msg.startswith("config.resources.cpu: 2 exceeds")
    msg = _problem(_create(user, _name("lim"), limits={"scratch": "plenty"}), 400, "invalid-api-params")
    assert msg.startswith("config.limits.scratch: ")
    assert user.get("/session").json()["items"] == []


def test_resource_errors_are_in_human_units_and_name_the_slot_meant(user: SignedClient) -> None:
    policy = user.policy  # type: ignore[attr-defined]
    msg = _problem(_create(user, _name("lim"), resources={"mem": "32g"}), 400, "invalid-api-params")
    assert msg == f'config.resources.mem: 32 GiB exceeds the keypair\'s resource policy "{policy}" (max 512 MiB)'
    msg = _problem(_create(user, _name("lim"), limits={"output": "2m"}), 400, "invalid-api-params")
    assert msg.startswith("config.limits.output: 2 MiB exceeds") and msg.endswith("(max 1 MiB)")
    msg = _problem(_create(user, _name("lim"), resources={"gpu": 1}), 400, "invalid-api-params")
    assert msg.startswith(
        "config.resources.gpu: unknown resource slot 'gpu' (did you mean 'cuda.device'? known slots: cpu, mem"
    )
    msg = _problem(_create(user, _name("lim"), resources={"memory": "256m"}), 400, "invalid-api-params")
    assert msg.startswith("config.resources.memory: unknown resource slot 'memory' (did you mean 'mem'?")
    assert user.get("/session").json()["items"] == []


@pytest.mark.local_only(reason="the manager's quota: no run in the sandbox")
def test_the_total_of_a_keypairs_sessions_is_a_quota(user: SignedClient) -> None:
    assert _create(user, _name("lim")).status_code == 201
    assert _create(user, _name("lim")).status_code == 201
    msg = _problem(_create(user, _name("lim")), 412, "quota-exceeded")
    assert "config.resources.cpu" in msg and "allows 2" in msg


def _terminated(client: SignedClient, name: str) -> dict[str, Any]:
    """The session's info once it is TERMINATED (its end is under way when this is asked)."""

    def info() -> dict[str, Any] | None:
        got: dict[str, Any] = client.get(f"/session/{name}").json()
        return got if got.get("status") == "TERMINATED" else None

    return wait_for(info, what=f"session {name} to be TERMINATED")


def _id_of(client: SignedClient, name: str) -> str:
    session_id: str = client.get(f"/session/{name}").json()["sessionId"]
    return session_id


# The limits below run on the manager's clock, which the tests move (tests/manual_clock.py):
# ``reap`` then says which sessions are past a limit at that moment, and the tests wait for
# the end of those only.


def test_an_idle_session_ends_with_the_reason_in_events_and_info(api: SignedClient,
                                                                  bai_server: RunningServer) -> None:
    name = _name("idle")
    listener = Listener(api, f"/events/session?sessionName={name}")
    with driving(bai_server.server.manager.clock) as clock:
        assert _create(api, name, limits={"idleTimeout": 60}).status_code == 201
        session_id = _id_of(api, name)
        clock.advance(59)
        assert session_id not in reap(bai_server)
        clock.advance(1)
        assert session_id in reap(bai_server)
        listener.thread.join(HANG_S)
        listener.client.close()
    terminated = dict(listener.records)["session_terminated"]
    assert terminated["reason"] == "idle-timeout"
    assert "session_success" in listener.names()
    info = api.get(f"/session/{name}").json()
    assert (info["status"], info["statusInfo"]) == ("TERMINATED", "idle-timeout")
    assert info["lastStat"]["status"] == "terminated"  # the stats at destroy were kept
    assert info["limits"]["idleTimeout"] == 60.0


@pytest.mark.local_only(reason="the manager's idle clock; the backend's part is the idle test's destroy")
def test_a_running_session_is_not_idle(api: SignedClient, bai_server: RunningServer) -> None:
    """A run that goes on with no request in flight (its client does not poll) keeps its
    session; the idle time counts from the run's end."""
    name = _name("busy")
    code = "import os, time\nprint('busy', flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\n"
    with driving(bai_server.server.manager.clock) as clock:
        assert _create(api, name, limits={"idleTimeout": 60}).status_code == 201
        session_id = _id_of(api, name)
        first = api.post(f"/session/{name}", {"mode": "query", "code": code}).json()["result"]
        assert first["status"] == "continued"
        clock.advance(600)
        assert session_id not in reap(bai_server)
        assert api.get(f"/session/{name}").json()["status"] == "RUNNING"
        assert upload(api, name, [("go", b"")]).status_code == 204
        assert following(api, name, first)[-1]["status"] == "finished"
        clock.advance(59)
        assert session_id not in reap(bai_server)
        clock.advance(1)
        assert session_id in reap(bai_server)
    info = _terminated(api, name)
    assert (info["status"], info["statusInfo"]) == ("TERMINATED", "idle-timeout")


@pytest.mark.local_only(reason="the manager's idle clock")
def test_an_open_stream_keeps_its_session_and_input_waits_are_idle(api: SignedClient,
                                                                   bai_server: RunningServer) -> None:
    name = _name("ws")
    with driving(bai_server.server.manager.clock) as clock:
        assert _create(api, name, limits={"idleTimeout": 60}).status_code == 201
        session_id = _id_of(api, name)
        with open_ws(api, name) as ws:
            ws.send(json.dumps({"code": "print('got', input('> '))", "mode": "query", "options": {}}))
            assert json.loads(ws.recv(timeout=HANG_S))["status"] == "waiting-input"
            clock.advance(600)  # blocked on the user, but the stream is open
            assert session_id not in reap(bai_server)
            ws.send("me")
            while json.loads(ws.recv(timeout=HANG_S))["status"] != "finished":
                pass
        wait_for(lambda: nothing_in_flight(bai_server, session_id), what="the stream's end at the manager")
        # over REST, a run waiting for input is the user's to answer: the session idles out
        first = api.post(f"/session/{name}", {"mode": "query", "code": "input()"}).json()["result"]
        assert first["status"] == "waiting-input"
        clock.advance(59)
        assert session_id not in reap(bai_server)
        clock.advance(1)
        assert session_id in reap(bai_server)
    assert _terminated(api, name)["statusInfo"] == "idle-timeout"


@pytest.mark.local_only(reason="the manager's lifetime clock")
def test_the_lifetime_limit_ends_even_a_busy_session(api: SignedClient, bai_server: RunningServer) -> None:
    name = _name("life")
    listener = Listener(api, f"/events/session?sessionName={name}")
    with driving(bai_server.server.manager.clock) as clock:
        assert _create(api, name, limits={"maxLifetime": 120, "idleTimeout": 60}).status_code == 201
        session_id = _id_of(api, name)
        first = api.post(f"/session/{name}", {"mode": "query", "code": "import time; time.sleep(600)"}).json()
        assert first["result"]["status"] == "continued"
        clock.advance(119)  # busy: not idle, and short of its lifetime
        assert session_id not in reap(bai_server)
        clock.advance(1)
        assert session_id in reap(bai_server)
        info = _terminated(api, name)
        listener.thread.join(HANG_S)
        listener.client.close()
    assert (info["status"], info["statusInfo"]) == ("TERMINATED", "max-lifetime-reached")
    assert dict(listener.records)["session_terminated"]["reason"] == "max-lifetime-reached"


# -- administration ---------------------------------------------------------------------


@pytest.mark.local_only(reason="administration: no sandbox")
def test_policies_are_administered(api: SignedClient) -> None:
    name = _name("pol")
    made = api.post("/admin/resource-policies", {"name": name, "idleTimeout": 300, "maxScratchBytes": "1g"})
    assert made.status_code == 201, made.text
    assert (made.json()["idle_timeout_s"], made.json()["max_scratch_bytes"]) == (300.0, 2**30)
    listed = {p["name"]: p for p in api.get("/admin/resource-policies").json()["items"]}
    assert listed["default"]["idle_timeout_s"] == 3600.0 and listed["default"]["num_keypairs"] >= 1
    assert name in listed
    changed = api.patch(f"/admin/resource-policies/{name}", body={"idle_timeout_s": None, "max_pids": 100})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["idle_timeout_s"], changed.json()["max_pids"]) == (None, 100)
    assert changed.json()["max_scratch_bytes"] == 2**30  # left out: kept
    again = api.post("/admin/resource-policies", {"name": name})
    assert "already exists" in _problem(again, 400, "invalid-api-params")
    bad = api.patch(f"/admin/resource-policies/{name}", body={"exec_timeout_s": "soon"})
    assert _problem(bad, 400, "invalid-api-params").startswith("exec_timeout_s: ")
    assert api.delete(f"/admin/resource-policies/{name}").status_code == 204
    assert api.delete(f"/admin/resource-policies/{name}").status_code == 404


@pytest.mark.local_only(reason="administration: no sandbox")
def test_a_policy_in_use_or_the_default_cannot_be_deleted(api: SignedClient) -> None:
    name = _name("pol")
    assert api.post("/admin/resource-policies", {"name": name}).status_code == 201
    keypair = api.post("/admin/keypairs", {"user_id": "x"}).json()
    assert keypair["resource_policy"] == "default"
    moved = api.patch(f"/admin/keypairs/{keypair['access_key']}", body={"resourcePolicy": name})
    assert moved.status_code == 200 and moved.json()["resource_policy"] == name
    msg = _problem(api.delete(f"/admin/resource-policies/{name}"), 400, "invalid-api-params")
    assert "in use by 1 keypair(s)" in msg and keypair["access_key"] in msg
    assert "cannot be deleted" in _problem(api.delete("/admin/resource-policies/default"), 400, "invalid-api-params")
    unknown = api.patch(f"/admin/keypairs/{keypair['access_key']}", body={"resourcePolicy": "nope"})
    assert _problem(unknown, 400, "invalid-api-params").startswith("resource_policy: no such resource policy")
    unknown = api.post("/admin/keypairs", {"resourcePolicy": "nope"})
    assert _problem(unknown, 400, "invalid-api-params").startswith("resource_policy: ")
    api.delete(f"/admin/keypairs/{keypair['access_key']}")
    assert api.delete(f"/admin/resource-policies/{name}").status_code == 204


@pytest.mark.local_only(reason="administration: no sandbox")
def test_only_admins_administer_policies(api: SignedClient) -> None:
    created = api.post("/admin/keypairs", {"user_id": "plain"}).json()
    with SignedClient(api.endpoint, created["access_key"], created["secret_key"]) as plain:
        for response in (
            plain.get("/admin/resource-policies"),
            plain.post("/admin/resource-policies", {"name": "mine"}),
            plain.patch("/admin/resource-policies/default", body={"idle_timeout_s": None}),
            plain.delete("/admin/resource-policies/default"),
            plain.patch(f"/admin/keypairs/{created['access_key']}", body={"resourcePolicy": "default"}),
        ):
            _problem(response, 403, "insufficient-privilege")
    api.delete(f"/admin/keypairs/{created['access_key']}")
