"""The agent RPC server and the heartbeat client, on real servers on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from agent_sandbox import make_config, running_agent, sandbox_unavailable, spec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bai.agent.agent import Agent
from bai.agent.heartbeat import Heartbeat, ManagerClient
from bai.agent.main import serve
from bai.agent.rpc import AgentRpcServer
from bai.common.agent_calls import CALLS, INFO, SECRET_HEADER, Kind
from bai.common.agent_rpc import AgentInfo, RpcError, SessionGone, SessionStats
from bai.common.wire import RunResult
from tests.capabilities import needs
from tests.waiting import until

SECRET = "s3cret-for-tests"
REASON = sandbox_unavailable()


@contextlib.asynccontextmanager
async def rpc_server(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    server = AgentRpcServer(agent, SECRET, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", headers={"X-BAI-Cluster-Secret": SECRET}
        ) as client:
            yield client
    finally:
        await server.stop()


@pytest.fixture
def idle_agent() -> Iterator[Agent]:
    """An agent whose backend is not started: enough for info and for refusals."""
    config = make_config()
    yield Agent(config)
    shutil.rmtree(config.data_dir, ignore_errors=True)


async def test_every_route_checks_the_secret(idle_agent: Agent) -> None:
    """Every declared call, whatever its kind, is refused without the right secret, and
    so is a path that names no call: the check stands in front of every route."""
    async with rpc_server(idle_agent) as client:
        paths = [call.path for call in CALLS if call.kind != Kind.WEBSOCKET] + ["/rpc/no_such_call"]
        for path in paths:
            for headers in ({SECRET_HEADER: "wrong"}, {SECRET_HEADER: ""}):
                response = await client.post(path, json={"session_id": "x"}, headers=headers)
                assert response.status_code == 401, path
                assert RpcError.model_validate(response.json()).error == "AuthFailed"
        bare = httpx.AsyncClient(base_url=str(client.base_url))
        async with bare:
            assert (await bare.post(INFO.path)).status_code == 401
        sockets = [call for call in CALLS if call.kind == Kind.WEBSOCKET]
        assert sockets
        for call in sockets:
            base = "ws" + str(client.base_url).removeprefix("http").rstrip("/")
            url = f"{base}{call.path}?session_id=x&rows=2&cols=2"
            for headers in ({SECRET_HEADER: "wrong"}, {}):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(url, additional_headers=headers, open_timeout=10)
                assert refused.value.response.status_code == 401, call.name


async def test_info_and_errors(idle_agent: Agent) -> None:
    async with rpc_server(idle_agent) as client:
        response = await client.post("/rpc/info")
        assert response.status_code == 200
        info = AgentInfo.model_validate(response.json())
        # a backend not started has not checked what this host can run: it offers nothing yet
        assert info.agent_id == idle_agent.config.agent_id and info.environments == []

        missing = await client.post("/rpc/session_stats", json={"session_id": "nope"})
        assert missing.status_code == 404
        assert RpcError.model_validate(missing.json()).error == "SessionNotFound"

        bad = await client.post("/rpc/execute", json={"session_id": "x", "mode": "shout"})
        assert bad.status_code == 400
        error = RpcError.model_validate(bad.json())
        assert (error.error, error.field) == ("InvalidRequest", "mode")

        garbage = await client.post("/rpc/execute", content=b"{not json")
        assert garbage.status_code == 400


@pytest.mark.sandbox
@needs("sandbox", REASON)
async def test_a_session_over_rpc() -> None:
    async with running_agent() as agent, rpc_server(agent) as client:
        one = spec()
        created = await client.post("/rpc/create_session", content=one.model_dump_json())
        assert created.status_code == 204, created.text
        ref = {"session_id": one.session_id}
        response = await client.post(
            "/rpc/execute", json={"session_id": one.session_id, "mode": "query", "code": "print(1+1)"}
        )
        result = RunResult.model_validate(response.json())
        assert (result.status, result.console) == ("finished", [("stdout", "2\n")])
        completions = await client.post("/rpc/complete", json={"session_id": one.session_id, "code": "pri"})
        assert "print" in "".join(completions.json())
        assert (await client.post("/rpc/interrupt", json=ref)).status_code == 204
        stats = SessionStats.model_validate((await client.post("/rpc/session_stats", json=ref)).json())
        assert stats.mem_limit == 2**30
        assert (await client.post("/rpc/restart_session", json=ref)).status_code == 204
        final = await client.post("/rpc/destroy_session", json=ref)
        assert final.status_code == 200 and SessionStats.model_validate(final.json()).cpu_used_ms >= 0
        assert agent.sessions == {}


class FakeManager:
    """The manager's two internal routes, recording what they get."""

    def __init__(self) -> None:
        self.posts: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
        self.fail_next = 0

    async def record(self, request: Request) -> Response:
        if self.fail_next:
            self.fail_next -= 1
            return Response(status_code=503)
        await self.posts.put((request.url.path, request.headers.get("x-bai-cluster-secret", ""), await request.json()))
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/internal/agents/heartbeat", self.record, methods=["POST"]),
                Route("/internal/sessions/gone", self.record, methods=["POST"]),
            ]
        )


@pytest.fixture
async def manager() -> AsyncIterator[tuple[FakeManager, str]]:
    fake = FakeManager()

    class Quiet(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = Quiet(uvicorn.Config(fake.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.get_running_loop().create_task(server.serve())
    await until(lambda: server.started, what="the fake manager to listen")
    port = server.servers[0].sockets[0].getsockname()[1]
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_heartbeat_registers_and_repeats(idle_agent: Agent, manager: tuple[FakeManager, str]) -> None:
    fake, url = manager
    client = ManagerClient(url, SECRET)
    beat = Heartbeat(client, idle_agent.info, interval_s=0.05)
    beat.start()
    try:
        for _ in range(2):
            path, secret, body = await asyncio.wait_for(fake.posts.get(), 5)
            assert (path, secret) == ("/internal/agents/heartbeat", SECRET)
            assert AgentInfo.model_validate(body).agent_id == idle_agent.config.agent_id
    finally:
        await beat.stop()
        await client.close()


async def test_session_gone_is_reported_with_retries(manager: tuple[FakeManager, str]) -> None:
    fake, url = manager
    fake.fail_next = 1
    client = ManagerClient(url, SECRET)
    try:
        await client.session_gone(SessionGone(session_id="s1", reason="the sandbox exited"))
        path, secret, body = await asyncio.wait_for(fake.posts.get(), 5)
        assert (path, secret) == ("/internal/sessions/gone", SECRET)
        assert SessionGone.model_validate(body).session_id == "s1"
    finally:
        await client.close()


class Unreachable(httpx.AsyncBaseTransport):
    """Refuses the first ``refusals`` connections, as a manager that is down does; the
    requests after them go through."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.through = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.refusals:
            self.refusals -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return await self.through.handle_async_request(request)

    async def aclose(self) -> None:
        await self.through.aclose()


async def test_heartbeat_survives_an_unreachable_manager(
    idle_agent: Agent, manager: tuple[FakeManager, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Three beats find the manager down (then once it answers 503): each is logged, the
    heartbeat goes on and the next one registers the agent."""
    fake, url = manager
    fake.fail_next = 1
    transport = Unreachable(refusals=3)
    async with httpx.AsyncClient(transport=transport) as http:
        beat = Heartbeat(ManagerClient(url, SECRET, client=http), idle_agent.info, interval_s=0.01)
        with caplog.at_level(logging.WARNING, logger="bai.agent.heartbeat"):
            beat.start()
            try:
                path, _secret, body = await asyncio.wait_for(fake.posts.get(), 10)
            finally:
                await beat.stop()
    assert path == "/internal/agents/heartbeat"
    assert AgentInfo.model_validate(body).agent_id == idle_agent.config.agent_id
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("heartbeat: ")]
    assert len(failures) == 4, failures
    assert "connection refused" in failures[0] and "503" in failures[3]


@pytest.mark.sandbox
@needs("sandbox", REASON)
async def test_the_daemon_registers_with_its_real_port(manager: tuple[FakeManager, str]) -> None:
    fake, url = manager
    config = make_config(manager_url=url, cluster_secret=SECRET, rpc_port=0, heartbeat_interval_s=0.05)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(serve(config, stop))
    try:
        path, secret, body = await asyncio.wait_for(fake.posts.get(), 15)
        info = AgentInfo.model_validate(body)
        assert (path, secret) == ("/internal/agents/heartbeat", SECRET)
        assert not info.rpc_url.endswith(":0")
        async with httpx.AsyncClient(headers={"X-BAI-Cluster-Secret": SECRET}) as client:
            response = await client.post(f"{info.rpc_url}/rpc/info")
        assert AgentInfo.model_validate(response.json()).agent_id == config.agent_id
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        shutil.rmtree(config.data_dir, ignore_errors=True)
