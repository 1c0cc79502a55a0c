"""What the SDK puts on the wire and how it reads the answers, over httpx's MockTransport.

The manager's own behaviour is tested end to end in tests/e2e/test_sdk_*.py;
here only the client's half of the contract (API.md sections 5 and 6).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import pydoc
import threading
from pathlib import Path
from typing import Any

import httpx
import mypy.api
import pytest

from bai.client import APIConfig, AsyncSession, Session, SessionStats, sync
from bai.client.base import AsyncAPI
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
    # one limits model both ways: the SDK writes the names the server shows (sizes in bytes)
    assert manager.body_of("POST", "/session")["config"] == {"limits": {"scratchBytes": 2**30, "idleTimeout": 60.0}}


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
        assert (result.run_id, result.status, result.exit_code) == ("r1", "finished", 0)
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


# -- the blocking API's surface: twins of the async classes ---------------------------------


def public_members(cls: type) -> dict[str, Any]:
    """The public methods and properties of a class, with ``async with``/``async for``/call protocol."""
    names = {name for name in dir(cls) if not name.startswith("_")}
    names |= {name for name in ("__call__", "__aenter__", "__aexit__", "__anext__") if name in vars(cls)}
    return {name: inspect.getattr_static(cls, name) for name in names}


BLOCKING_NAME = {"__aenter__": "__enter__", "__aexit__": "__exit__", "__anext__": "__next__"}


def parameters(function: Any) -> list[tuple[str, Any, Any, Any]]:
    signature = inspect.signature(function, eval_str=True)
    return [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]


def async_instances() -> list[AsyncAPI]:
    """One object of each async API class, built without I/O (their instance attributes count)."""
    api = AsyncSession(CONFIG, transport=httpx.MockTransport(lambda request: httpx.Response(204)))
    sess = api.ComputeSession("demo")
    return [api, api.ComputeSession, api.Admin, sess, sess.stream_execute("1"), sess.terminal()]


def test_every_async_api_class_has_a_blocking_twin() -> None:
    def subclasses(cls: type[AsyncAPI]) -> set[type[AsyncAPI]]:
        found: set[type[AsyncAPI]] = set()
        for direct in cls.__subclasses__():
            found |= {direct, *subclasses(direct)}
        return found

    ours = {cls for cls in subclasses(AsyncAPI) if cls.__module__.startswith("bai.client.")}
    assert ours == set(sync.TWINS)
    assert {type(obj) for obj in async_instances()} == ours


@pytest.mark.parametrize("async_class", list(sync.TWINS), ids=lambda cls: cls.__name__)
def test_each_public_async_method_has_its_twin_with_the_same_parameters(async_class: type[AsyncAPI]) -> None:
    twin = sync.TWINS[async_class]
    skipped = sync.ASYNC_ONLY.get(async_class, frozenset())
    for name, member in public_members(async_class).items():
        if name in skipped:
            assert not hasattr(twin, name)
            continue
        blocking = inspect.getattr_static(twin, BLOCKING_NAME.get(name, name), None)
        assert blocking is not None, f"{twin.__name__} has no twin of {async_class.__name__}.{name}"
        if isinstance(member, property):
            assert isinstance(blocking, property), name
            continue
        assert inspect.iscoroutinefunction(blocking) is False, name
        assert parameters(blocking) == parameters(member), f"{twin.__name__}.{name} drifted from its async twin"
        assert blocking.__doc__ == member.__doc__ or member.__doc__ is None or name.startswith("__"), name
    assert parameters(sync.Session.__init__) == parameters(AsyncSession.__init__)


def test_the_async_objects_public_attributes_are_on_their_twins() -> None:
    for obj in async_instances():
        twin = sync.TWINS[type(obj)]
        attributes = {name for name in vars(obj) if not name.startswith("_")}
        with Session(CONFIG, transport=httpx.MockTransport(lambda request: httpx.Response(204))) as api:
            instance_attributes = set(vars(api)) if twin is Session else set()
        missing = {name for name in attributes if not hasattr(twin, name) and name not in instance_attributes}
        assert not missing, f"{twin.__name__} lacks {missing}"


def test_dir_help_and_signatures_describe_the_blocking_api(manager: FakeManager) -> None:
    with Session(CONFIG, transport=manager.transport()) as api:
        assert {"server_version", "list_sessions", "ComputeSession", "Admin", "close"} <= set(dir(api))
        sess = api.ComputeSession("demo")
        assert {"run", "execute", "stream_execute", "upload", "destroy", "name", "id"} <= set(dir(sess))
        assert "create_keypair" in dir(api.Admin)
    assert list(inspect.signature(sync.ComputeSession.run).parameters) == [
        "self", "code", "mode", "opts", "stdin", "on_output",
    ]  # fmt: skip
    assert inspect.signature(sync.ComputeSessionFactory.get_or_create).return_annotation == "ComputeSession"
    text = pydoc.plain(pydoc.render_doc(sync.ComputeSession))
    assert "Run ``code`` to its end" in text and "Terminate the session" in text


TYPED_SNIPPET = """
from bai.client import APIConfig, Session
from bai.client.runs import RunOutput

def main(config: APIConfig) -> int:
    with Session(config) as api:
        sess = api.ComputeSession.get_or_create("python", name="demo")
        out: RunOutput = sess.run("print(1)", stdin="x", on_output=lambda kind, data: None)
        text: str = out.stdout + api.server_version().version
        for frame in sess.stream_execute("print(2)"):
            text += frame.status
        return len(text) + (out.exit_code or 0)
"""


@pytest.mark.slow
def test_the_blocking_api_is_typed_for_mypy(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text(TYPED_SNIPPET)
    bad = tmp_path / "bad.py"
    bad.write_text("from bai.client import Session\n\ndef f(api: Session) -> int:\n    return api.server_version()\n")
    report, errors, status = mypy.api.run(["--strict", "--cache-dir", os.devnull, str(good), str(bad)])
    assert status == 1, report + errors
    lines = [line for line in report.splitlines() if ": error:" in line]
    # the blocking API is not Any: a wrong use is an error, the right one is not
    assert len(lines) == 1 and lines[0].startswith(str(bad)), report
    assert 'Incompatible return value type (got "ServerVersion", expected "int")' in lines[0]


# -- run(): to the end through continuations and input --------------------------------------


class ScriptedRuns:
    """Answers execute calls from a script of results, in order; records each request's body."""

    def __init__(self, *results: dict[str, Any] | None) -> None:
        self.results = list(results)
        self.bodies: list[dict[str, Any]] = []
        self.interrupted = asyncio.Event()
        self.waiting = asyncio.Event()  # set when a request is held by a None in the script

    async def answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/interrupt"):
            self.interrupted.set()
            return httpx.Response(204)
        self.bodies.append(json.loads(request.content))
        result = self.results.pop(0)
        if result is None:
            self.waiting.set()
            await asyncio.Event().wait()  # the caller cancels the run while this request is held
            raise AssertionError("a held request was answered")
        return httpx.Response(200, json={"result": {"runId": "r1", **result}})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.answer)


STATS_OF_RUN = {"cpu_ms": 12.5, "wall_ms": 20.0, "mem_peak": 4096}


async def test_run_waits_through_continuations_and_input() -> None:
    server = ScriptedRuns(
        {"status": "continued", "console": [["stdout", "a\n"]]},
        {"status": "waiting-input", "console": [["stdout", "who? "]]},
        {"status": "continued", "console": [["stderr", "warn\n"]]},
        {"status": "waiting-input", "console": [["stdout", "and? "]]},
        {"status": "finished", "exitCode": 3, "console": [["stdout", "hi bob\n"]],
         "options": {"stats": STATS_OF_RUN}},
    )  # fmt: skip
    prompts: list[str] = []
    seen: list[tuple[str, Any]] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return f"line{len(prompts)}"

    async with AsyncSession(CONFIG, transport=server.transport()) as api:
        out = await api.ComputeSession("demo").run("x", stdin=ask, on_output=lambda *item: seen.append(item))
    assert (out.status, out.exit_code, out.run_id) == ("finished", 3, "r1")
    assert out.stdout == "a\nwho? and? hi bob\n"
    assert out.stderr == "warn\n"
    assert seen == out.console == [
        ("stdout", "a\n"), ("stdout", "who? "), ("stderr", "warn\n"), ("stdout", "and? "), ("stdout", "hi bob\n"),
    ]  # fmt: skip
    assert out.stats is not None and out.stats.cpu_ms == 12.5
    assert prompts == ["a\nwho? ", "and? "]
    assert [(b["mode"], b["runId"], b["code"]) for b in server.bodies] == [
        ("query", None, "x"), ("continue", "r1", ""), ("input", "r1", "line1"), ("continue", "r1", ""),
        ("input", "r1", "line2"),
    ]  # fmt: skip


async def test_run_answers_input_from_a_string_then_with_empty_lines() -> None:
    server = ScriptedRuns(
        {"status": "waiting-input"},
        {"status": "waiting-input"},
        {"status": "finished", "exitCode": 0},
    )
    async with AsyncSession(CONFIG, transport=server.transport()) as api:
        await api.ComputeSession("demo").run("x", stdin="bob\n")
    assert [b["code"] for b in server.bodies if b["mode"] == "input"] == ["bob", ""]


async def test_run_in_batch_mode_continues_after_its_steps() -> None:
    server = ScriptedRuns(
        {"status": "build-finished", "exitCode": 0, "console": [["stdout", "built\n"]]},
        {"status": "exec-timeout", "console": [["stdout", "ran\n"]]},
    )
    async with AsyncSession(CONFIG, transport=server.transport()) as api:
        out = await api.ComputeSession("demo").run(mode="batch", opts={"build": "*", "exec": "*"})
    assert (out.status, out.stdout) == ("exec-timeout", "built\nran\n")
    assert [(b["mode"], b["options"]) for b in server.bodies] == [
        ("batch", {"build": "*", "exec": "*"}), ("continue", {}),
    ]  # fmt: skip


async def test_a_cancelled_run_interrupts_the_session() -> None:
    server = ScriptedRuns({"status": "continued"}, None)
    async with AsyncSession(CONFIG, transport=server.transport()) as api:
        running = asyncio.create_task(api.ComputeSession("demo").run("while True: pass"))
        await server.waiting.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert server.interrupted.is_set()


def test_the_blocking_run_and_event_stream() -> None:
    server = ScriptedRuns({"status": "continued", "console": [["stdout", "1"]]},
                          {"status": "finished", "exitCode": 0, "console": [["stdout", "2"]]})  # fmt: skip
    data = json.dumps({"sessionId": SESSION_ID, "kernelId": SESSION_ID, "sessionName": "demo",
                       "ownerAccessKey": CONFIG.access_key})  # fmt: skip
    events = f"event: session_started\ndata: {data}\n\n: keep-alive\n\nevent: session_terminated\ndata: {data}\n\n"

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/events/session":
            return httpx.Response(200, text=events, headers={"content-type": "text/event-stream"})
        return await server.answer(request)

    streamed: list[str] = []
    with Session(CONFIG, transport=httpx.MockTransport(answer)) as api:
        out = api.ComputeSession("demo").run("x", on_output=lambda kind, data: streamed.append(data))
        names = [event.name for event in api.session_events(name="demo")]
    assert (out.stdout, streamed) == ("12", ["1", "2"])
    assert names == ["session_started", "session_terminated"]
