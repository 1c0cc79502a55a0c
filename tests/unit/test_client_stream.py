"""The execute WebSocket from the client's side, against a scripted WebSocket server on port 0.

The server checks the handshake's signature the way the manager does (with
the Host header and path it received), then plays a script of frames.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from bai.client import APIConfig, AsyncSession, ConnectionFailed, ProtocolError, Session
from bai.client.cli.run import EXIT_INTERRUPTED, Terminal, stream_run
from bai.client.errors import PROBLEM_TYPE_PREFIX
from bai.common import errors as domain
from bai.common import signing
from tests.waiting import until

ACCESS = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

Frame = dict[str, Any]


def out(kind: str, text: str) -> Frame:
    return {"status": "continued", "console": [[kind, text]], "exitCode": None, "options": {}, "files": []}


def finished(code: int = 0) -> Frame:
    return {"status": "finished", "console": [], "exitCode": code, "options": {}, "files": []}


WAIT_INPUT: Frame = {"status": "waiting-input", "console": [], "options": {"is_password": False}}


@dataclass
class ScriptedServer:
    """Plays ``script``: a dict is sent as a frame; "INPUT" receives one client frame;
    "HANG" waits for the client to go; "CLOSE" closes the socket."""

    script: list[Frame | str] = field(default_factory=list)
    reject: tuple[int, str] | None = None
    first_frames: list[Frame] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    def check_signature(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = request.headers
        _, access_key, signature = signing.parse_authorization(headers["Authorization"])
        expected = signing.sign(
            secret_key=SECRET,
            method="GET",
            path_with_query=request.path,
            date_header=headers["Date"],
            host=headers["Host"],
            content_type=headers.get("Content-Type"),
            api_version=headers["X-BackendAI-Version"],
        )
        if access_key != ACCESS or not signing.signatures_match(expected, signature):
            return connection.respond(HTTPStatus.UNAUTHORIZED, problem("auth-failed", "bad signature"))
        if self.reject is not None:
            return connection.respond(self.reject[0], problem("object-not-found", self.reject[1]))
        return None

    async def handle(self, connection: ServerConnection) -> None:
        self.first_frames.append(json.loads(await connection.recv()))
        try:
            for step in self.script:
                if step == "INPUT":
                    self.inputs.append(str(await connection.recv()))
                elif step == "HANG":
                    await connection.wait_closed()
                elif step == "CLOSE":
                    await connection.close()
                else:
                    await connection.send(json.dumps(step))
        finally:
            await connection.wait_closed()
            self.disconnected.set()


def problem(slug: str, msg: str) -> str:
    return json.dumps({"type": PROBLEM_TYPE_PREFIX + slug, "title": "t", "msg": msg})


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer()
    async with serve(scripted.handle, "127.0.0.1", 0, process_request=scripted.check_signature) as ws_server:
        scripted.port = next(iter(ws_server.sockets)).getsockname()[1]
        yield scripted


def config_for(server: ScriptedServer) -> APIConfig:
    return APIConfig(endpoint=f"http://127.0.0.1:{server.port}", access_key=ACCESS, secret_key=SECRET)


def http_recorder(calls: list[str]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        return httpx.Response(204)

    return httpx.MockTransport(answer)


async def test_frames_input_and_the_end(server: ScriptedServer) -> None:
    server.script = [out("stdout", "who? "), WAIT_INPUT, "INPUT", out("stdout", "hi bob\n"), finished(0)]
    seen = []
    async with (
        AsyncSession(config_for(server)) as api,
        api.ComputeSession("demo").stream_execute("print(1)", opts={"x": 1}) as stream,
    ):
        async for frame in stream:
            seen.append(frame.status)
            if frame.status == "waiting-input":
                await stream.send_input("bob")
        assert stream.finished
    assert seen == ["continued", "waiting-input", "continued", "finished"]
    assert server.first_frames == [{"code": "print(1)", "mode": "query", "options": {"x": 1}}]
    assert server.inputs == ["bob"]


async def test_an_error_frame_raises_execution_failed(server: ScriptedServer) -> None:
    server.script = [{"status": "error", "msg": "the session is gone"}]
    async with AsyncSession(config_for(server)) as api:
        with pytest.raises(domain.ExecutionFailed, match="the session is gone"):
            async with api.ComputeSession("demo").stream_execute("1") as stream:
                async for _ in stream:
                    pass


async def test_a_close_before_the_end_is_a_protocol_error(server: ScriptedServer) -> None:
    server.script = [out("stdout", "partial"), "CLOSE"]
    async with AsyncSession(config_for(server)) as api:
        with pytest.raises(ProtocolError, match="before the run finished"):
            async with api.ComputeSession("demo").stream_execute("1") as stream:
                async for _ in stream:
                    pass


async def test_a_refused_upgrade_raises_the_problem(server: ScriptedServer) -> None:
    server.reject = (404, "no such session: demo")
    async with AsyncSession(config_for(server)) as api:
        with pytest.raises(domain.SessionNotFound, match="no such session: demo"):
            async with api.ComputeSession("demo").stream_execute("1"):
                pass


async def test_a_wrong_key_is_refused_at_the_handshake(server: ScriptedServer) -> None:
    config = APIConfig(endpoint=f"http://127.0.0.1:{server.port}", access_key=ACCESS, secret_key="x" * 40)
    async with AsyncSession(config) as api:
        with pytest.raises(domain.AuthFailed, match="bad signature"):
            async with api.ComputeSession("demo").stream_execute("1"):
                pass


async def test_the_cli_runner_prints_live_and_answers_input(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script = [
        out("stdout", "a\n"),
        out("stderr", "b\n"),
        {"status": "continued", "console": [["media", ["image/png", "data:..."]]]},
        WAIT_INPUT,
        "INPUT",
        out("stdout", "c\n"),
        finished(3),
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("bob\n"))
    stdout, stderr = io.StringIO(), io.StringIO()
    async with AsyncSession(config_for(server)) as api:
        code = await stream_run(api.ComputeSession("demo"), "x", Terminal(stdout, stderr))
    assert code == 3
    assert stdout.getvalue() == "a\nc\n"
    assert stderr.getvalue() == "b\n[image/png output not shown]\n"
    assert server.inputs == ["bob"]


async def test_the_last_frames_stats_reach_the_terminal(server: ScriptedServer) -> None:
    stats = {"cpu_ms": 301.5, "wall_ms": 304.2, "mem_peak": 12 * 2**20, "mem_peak_scope": "run",
             "output_bytes": 3, "output_truncated": False}  # fmt: skip
    server.script = [out("stdout", "42\n"), {**finished(0), "options": {"stats": stats}}]
    terminal = Terminal(io.StringIO(), io.StringIO())
    async with AsyncSession(config_for(server)) as api:
        assert await stream_run(api.ComputeSession("demo"), "x", terminal) == 0
    assert terminal.run_stats is not None
    assert (terminal.run_stats.cpu_ms, terminal.run_stats.mem_peak) == (301.5, 12 * 2**20)


async def test_cancelling_a_run_interrupts_it(server: ScriptedServer) -> None:
    server.script = [out("stdout", "started\n"), "HANG"]
    calls: list[str] = []
    stdout = io.StringIO()
    async with AsyncSession(config_for(server), transport=http_recorder(calls)) as api:
        run = asyncio.create_task(stream_run(api.ComputeSession("demo"), "x", Terminal(stdout, io.StringIO())))
        await until(lambda: stdout.getvalue() == "started\n")
        run.cancel()
        assert await run == EXIT_INTERRUPTED
    await asyncio.wait_for(server.disconnected.wait(), 5)
    assert calls == ["POST /session/demo/interrupt"]


async def test_the_blocking_api_streams_too(server: ScriptedServer) -> None:
    server.script = [out("stdout", "who? "), WAIT_INPUT, "INPUT", finished(0)]
    config = config_for(server)

    def blocking() -> list[str]:
        statuses = []
        with Session(config) as api, api.ComputeSession("demo").stream_execute("input()") as stream:
            for frame in stream:
                statuses.append(frame.status)
                if frame.status == "waiting-input":
                    stream.send_input("alice")
        return statuses

    assert await asyncio.to_thread(blocking) == ["continued", "waiting-input", "finished"]
    assert server.inputs == ["alice"]


async def test_a_refused_connection_is_connection_failed() -> None:
    config = APIConfig(endpoint="http://127.0.0.1:9", access_key=ACCESS, secret_key=SECRET)
    async with AsyncSession(config) as api:
        with pytest.raises(ConnectionFailed, match=r"cannot connect to http://127\.0\.0\.1:9"):
            async with api.ComputeSession("demo").stream_execute("1"):
                pass
