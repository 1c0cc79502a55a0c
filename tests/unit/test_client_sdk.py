"""What the SDK puts on the wire and how it reads the answers, over httpx's MockTransport.

The manager's own behaviour is tested end to end in tests/e2e/test_sdk_*.py;
here only the client's half of the contract (API.md sections 5 and 6).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from bai.client import APIConfig, AsyncSession, Session, SessionStats
from bai.common import errors as domain

CONFIG = APIConfig(
    endpoint="http://127.0.0.1:8091",
    access_key="AKIAIOSFODNN7EXAMPLE",
    secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
)

SESSION_ID = "8d6c3f4e-2b1a-4c5d-9e8f-7a6b5c4d3e2f"
STATS = {
    "version": 2,
    "status": "terminated",
    "cpu_used": {"current": "123", "capacity": None, "unit_hint": "msec"},
    "mem": {"current": "1048576", "stats.max": "8388608", "unit_hint": "bytes"},
    "io_read": {"current": "0", "unit_hint": "bytes"},
}
INFO = {
    "sessionId": SESSION_ID,
    "sessionName": "demo",
    "image": "python",
    "lang": "python",
    "type": "interactive",
    "tag": None,
    "status": "RUNNING",
    "statusInfo": None,
    "age": 1500,
    "creationTime": "2024-01-01T00:00:00+00:00",
    "terminationTime": None,
    "agent": "local",
    "occupiedSlots": {"cpu": "1"},
    "requestedSlots": {"cpu": "1"},
    "environ": {},
    "numQueriesExecuted": 2,
    "lastStat": None,
}


class FakeManager:
    """Records requests and answers them from a table of (method, path) → (status, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {
            ("GET", "/"): (200, {"version": "v8.20240915", "manager": "bai 0.1.0"}),
            ("POST", "/session"): (
                201,
                {
                    "sessionId": SESSION_ID,
                    "sessionName": "demo",
                    "kernelId": SESSION_ID,
                    "status": "RUNNING",
                    "servicePorts": [],
                    "created": True,
                },
            ),
            ("GET", "/session"): (200, {"items": [INFO]}),
            ("GET", f"/session/{SESSION_ID}"): (200, INFO),
            ("POST", f"/session/{SESSION_ID}"): (
                200,
                {
                    "result": {
                        "runId": "r1",
                        "status": "finished",
                        "exitCode": 0,
                        "options": {},
                        "files": [],
                        "console": [["stdout", "42\n"]],
                    }
                },
            ),
            ("POST", f"/session/{SESSION_ID}/complete"): (
                200,
                {"result": {"status": "finished", "completions": ["print"]}},
            ),
            ("DELETE", f"/session/{SESSION_ID}"): (200, {"stats": STATS}),
            ("POST", "/auth/test"): (200, {"authorized": "yes", "echo": "hello"}),
        }

    def transport(self) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content) if request.content else None
            self.requests.append((request.method, request.url.path, body))
            status, payload = self.answers.get((request.method, request.url.path), (204, None))
            return httpx.Response(status, json=payload) if payload is not None else httpx.Response(status)

        return httpx.MockTransport(answer)

    def body_of(self, method: str, path: str) -> Any:
        return next(body for m, p, body in self.requests if (m, p) == (method, path))


@pytest.fixture
def manager() -> FakeManager:
    return FakeManager()


async def test_create_sends_the_camel_case_body(manager: FakeManager) -> None:
    async with AsyncSession(CONFIG, transport=manager.transport()) as api:
        sess = await api.ComputeSession.get_or_create(
            "python",
            name="demo",
            max_wait=30,
            no_reuse=True,
            envs={"A": "1"},
            resources={"cpu": "1", "mem": "512m"},
            tag="t",
        )
    assert (sess.id, sess.name, sess.status, sess.created) == (SESSION_ID, "demo", "RUNNING", True)
    assert manager.body_of("POST", "/session") == {
        "name": "demo",
        "image": "python",
        "type": "interactive",
        "tag": "t",
        "group": "default",
        "domain": "default",
        "enqueueOnly": False,
        "maxWaitSeconds": 30,
        "reuseIfExists": False,
        "config": {"resources": {"cpu": "1", "mem": "512m"}, "environ": {"A": "1"}},
    }


async def test_create_sends_the_limits(manager: FakeManager) -> None:
    async with AsyncSession(CONFIG, transport=manager.transport()) as api:
        await api.ComputeSession.get_or_create("python", name="demo", limits={"idle_timeout": 60, "scratch": "1g"})
        with pytest.raises(domain.InvalidRequest, match=r"^pids: "):
            await api.ComputeSession.get_or_create("python", name="demo", limits={"pids": "many"})
    assert manager.body_of("POST", "/session")["config"] == {"limits": {"scratch": "1g", "idle_timeout": 60.0}}


async def test_a_bad_name_is_refused_before_anything_is_sent(manager: FakeManager) -> None:
    async with AsyncSession(CONFIG, transport=manager.transport()) as api:
        with pytest.raises(domain.InvalidRequest, match=r"^name: must be 4 to 64 characters") as caught:
            await api.ComputeSession.get_or_create("python", name="a b")
    assert caught.value.field == "name"
    assert manager.requests == []


async def test_session_calls_use_the_id_and_read_the_answers(manager: FakeManager) -> None:
    async with AsyncSession(CONFIG, transport=manager.transport()) as api:
        sess = await api.ComputeSession.get_or_create("python", name="demo")
        result = await sess.execute(None, "print(42)")
        assert (result.runId, result.status, result.exitCode) == ("r1", "finished", 0)
        assert result.console == [("stdout", "42\n")]
        info = await sess.info()
        assert (info.sessionName, info.numQueriesExecuted) == ("demo", 2)
        completion = await sess.complete("pri", {"row": 0, "col": 3})
        assert completion.completions == ["print"]
        await sess.interrupt()
        await sess.restart()
        stats = await sess.destroy()
    path = f"/session/{SESSION_ID}"
    assert manager.body_of("POST", path) == {
        "mode": "query",
        "runId": None,
        "code": "print(42)",
        "options": {},
    }
    assert manager.body_of("POST", f"{path}/complete") == {
        "code": "pri",
        "options": {"row": 0, "col": 3, "line": "", "post": ""},
    }
    assert [(m, p) for m, p, _ in manager.requests[2:]] == [
        ("GET", path),
        ("POST", f"{path}/complete"),
        ("POST", f"{path}/interrupt"),
        ("PATCH", path),
        ("DELETE", path),
    ]
    assert stats.status == "terminated"
    assert stats.number("cpu_used") == 123
    assert stats.number("mem", "stats_max") == 8388608
    assert stats.to_wire()["mem"] == {"current": "1048576", "stats.max": "8388608", "unit_hint": "bytes"}


def test_stats_without_metrics_still_parse() -> None:
    stats = SessionStats.model_validate({"version": 2, "status": "terminated"})
    assert stats.metrics == {}
    assert stats.number("cpu_used") is None


async def test_a_name_is_quoted_into_the_path() -> None:
    paths: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path)
        return httpx.Response(204)

    async with AsyncSession(CONFIG, transport=httpx.MockTransport(answer)) as api:
        await api.ComputeSession("my/sess").interrupt()
    assert paths == [b"/session/my%2Fsess/interrupt"]


async def test_list_sessions_and_all(manager: FakeManager) -> None:
    seen: list[str] = []
    inner = manager.transport()

    async def spy(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.query, "ascii"))
        return await inner.handle_async_request(request)

    async with AsyncSession(CONFIG, transport=httpx.MockTransport(spy)) as api:
        assert [s.sessionName for s in await api.list_sessions()] == ["demo"]
        await api.list_sessions(all_=True)
    assert seen == ["", "all=true"]


async def test_admin_calls(manager: FakeManager) -> None:
    keypair = {
        "access_key": "AKIANEWKEY0000000000",
        "user_id": "bob",
        "is_admin": False,
        "is_active": True,
        "concurrency_limit": 3,
        "rate_limit": 100,
        "created_at": "2024-01-01T00:00:00+00:00",
        "num_sessions": 0,
    }
    manager.answers[("POST", "/admin/keypairs")] = (201, {**keypair, "secret_key": "s" * 40})
    manager.answers[("GET", "/admin/keypairs")] = (200, {"items": [keypair]})
    manager.answers[("POST", "/admin/keypairs/AKIANEWKEY0000000000/deactivate")] = (
        200,
        {**keypair, "is_active": False},
    )
    async with AsyncSession(CONFIG, transport=manager.transport()) as api:
        created = await api.Admin.create_keypair(user_id="bob", concurrency_limit=3, rate_limit=100)
        assert created.secret_key == "s" * 40
        assert [k.access_key for k in await api.Admin.list_keypairs()] == [created.access_key]
        assert (await api.Admin.deactivate_keypair(created.access_key)).is_active is False
        await api.Admin.delete_keypair(created.access_key)
        with pytest.raises(domain.InvalidRequest, match="concurrency_limit"):
            await api.Admin.create_keypair(concurrency_limit=0)
    assert manager.body_of("POST", "/admin/keypairs") == {
        "user_id": "bob",
        "is_admin": False,
        "concurrency_limit": 3,
        "rate_limit": 100,
        "resource_policy": "default",
    }
    assert manager.requests[-1][:2] == ("DELETE", "/admin/keypairs/AKIANEWKEY0000000000")


async def test_policy_admin_calls_send_only_what_is_given(manager: FakeManager) -> None:
    policy = {"name": "small", "idle_timeout_s": 600.0, "max_session_slots": {"cpu": "2"}}
    manager.answers[("POST", "/admin/resource-policies")] = (201, policy)
    manager.answers[("GET", "/admin/resource-policies")] = (200, {"items": [policy]})
    manager.answers[("PATCH", "/admin/resource-policies/small")] = (200, {**policy, "idle_timeout_s": None})
    manager.answers[("PATCH", "/admin/keypairs/AKIANEWKEY0000000000")] = (
        200,
        {
            "access_key": "AKIANEWKEY0000000000",
            "user_id": "bob",
            "is_admin": False,
            "is_active": True,
            "concurrency_limit": 3,
            "rate_limit": 100,
            "created_at": "2024-01-01T00:00:00+00:00",
            "resource_policy": "small",
        },
    )
    async with AsyncSession(CONFIG, transport=manager.transport()) as api:
        created = await api.Admin.create_policy("small", idle_timeout_s=600, max_session_slots={"cpu": 2})
        assert created.max_session_slots == {"cpu": "2"}
        assert [p.name for p in await api.Admin.list_policies()] == ["small"]
        assert (await api.Admin.update_policy("small", idle_timeout_s=None)).idle_timeout_s is None
        assert manager.body_of("PATCH", "/admin/resource-policies/small") == {"idle_timeout_s": None}
        moved = await api.Admin.set_keypair_policy("AKIANEWKEY0000000000", "small")
        assert moved.resource_policy == "small"
        await api.Admin.delete_policy("small")
        with pytest.raises(domain.InvalidRequest, match="exec_timeout_s"):
            await api.Admin.update_policy("small", exec_timeout_s="soon")
    assert manager.body_of("POST", "/admin/resource-policies") == {
        "name": "small",
        "idle_timeout_s": 600,
        "max_session_slots": {"cpu": 2},
    }
    assert manager.body_of("PATCH", "/admin/keypairs/AKIANEWKEY0000000000") == {"resource_policy": "small"}
    assert manager.requests[-1][:2] == ("DELETE", "/admin/resource-policies/small")


def test_the_blocking_api_wraps_the_async_one(manager: FakeManager) -> None:
    with Session(CONFIG, transport=manager.transport()) as api:
        assert api.server_version().version == "v8.20240915"
        assert api.auth_test("hello").echo == "hello"
        sess = api.ComputeSession.get_or_create("python", name="demo")
        assert sess.id == SESSION_ID
        assert sess.execute(None, "print(42)").console == [("stdout", "42\n")]
        assert api.ComputeSession("demo").name == "demo"
        assert sess.destroy().number("cpu_used") == 123
        with pytest.raises(domain.InvalidRequest):
            api.ComputeSession.get_or_create("python", name="x")
    assert ("GET", "/", None) in manager.requests


def test_the_blocking_api_closes_its_loop_thread(manager: FakeManager) -> None:
    def count() -> int:
        return sum(thread.name == "bai-client-loop" for thread in threading.enumerate())

    before = count()
    api = Session(CONFIG, transport=manager.transport())
    assert count() == before + 1
    api.close()
    api.close()
    assert count() == before
