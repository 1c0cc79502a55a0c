"""The SDK, async and blocking, against the embedded server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import RunningServer

from bai.client import APIConfig, AsyncComputeSession, AsyncSession, ServerError, Session
from bai.common import errors as domain
from bai.common.wire import RunResult

pytestmark = pytest.mark.sandbox


@pytest.fixture
def server(bai_server: RunningServer) -> RunningServer:
    """The run's embedded server (tests/conftest.py): a broken conftest fails these tests."""
    return bai_server


@pytest.fixture
def config(server: Any) -> APIConfig:
    return APIConfig(endpoint=server.endpoint, access_key=server.access_key, secret_key=server.secret_key)


@pytest.fixture
async def api(config: APIConfig) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(config) as session:
        yield session


def new_name() -> str:
    return f"sdk-{uuid.uuid4().hex[:8]}"


async def run_to_end(sess: AsyncComputeSession, code: str) -> tuple[RunResult, str]:
    result = await sess.execute(None, code)
    stdout = "".join(data for kind, data in result.console if kind == "stdout")
    while result.status == "continued":
        result = await sess.execute(result.run_id, "", mode="continue")
        stdout += "".join(data for kind, data in result.console if kind == "stdout")
    return result, stdout


async def test_version_and_auth(api: AsyncSession) -> None:
    assert (await api.server_version()).version == "v8.20240915"
    answer = await api.auth_test("ping")
    assert (answer.authorized, answer.echo) == ("yes", "ping")


async def test_a_session_from_create_to_destroy(api: AsyncSession) -> None:
    name = new_name()
    sess = await api.ComputeSession.get_or_create("python", name=name)
    assert (sess.name, sess.status, sess.created) == (name, "RUNNING", True)
    try:
        again = await api.ComputeSession.get_or_create("python", name=name)
        assert (again.id, again.created) == (sess.id, False)
        with pytest.raises(domain.SessionAlreadyExists) as exists:
            await api.ComputeSession.get_or_create("python", name=name, no_reuse=True)
        assert exists.value.existing_session_id == sess.id

        result, _ = await run_to_end(sess, "x = 41")
        assert (result.status, result.exit_code) == ("finished", 0)
        result, stdout = await run_to_end(sess, "print(x + 1)")
        assert stdout == "42\n"

        info = await api.ComputeSession(name).info()
        assert (info.sessionId, info.numQueriesExecuted) == (sess.id, 2)
        assert name in {item.sessionName for item in await api.list_sessions()}
    finally:
        stats = await sess.destroy()
    assert (stats.version, stats.status) == (2, "terminated")
    assert stats.number("cpu_used") is not None
    with pytest.raises(domain.SessionNotFound):
        await api.ComputeSession(name).destroy()


async def test_an_unknown_session_is_session_not_found(api: AsyncSession) -> None:
    with pytest.raises(domain.SessionNotFound) as gone:
        await api.ComputeSession("no-such-session-sdk").info()
    assert isinstance(gone.value, ServerError)
    assert (gone.value.status, gone.value.slug) == (404, "object-not-found")


async def test_streaming_with_input(api: AsyncSession) -> None:
    sess = await api.ComputeSession.get_or_create("python", name=new_name())
    try:
        stdout, statuses = "", []
        async with sess.stream_execute("name = input('who? ')\nprint('hi', name)") as stream:
            async for frame in stream:
                statuses.append(frame.status)
                stdout += "".join(data for kind, data in frame.console if kind == "stdout")
                if frame.status == "waiting-input":
                    await stream.send_input("bob")
        assert "waiting-input" in statuses
        assert statuses[-1] == "finished"
        assert stdout == "who? hi bob\n"
    finally:
        await sess.destroy()


async def test_an_execute_answer_carries_the_users_error(api: AsyncSession) -> None:
    sess = await api.ComputeSession.get_or_create("python", name=new_name())
    try:
        result, _ = await run_to_end(sess, "raise KeyError('k')")
        assert result.exit_code == 1
        assert any(kind == "stderr" and "KeyError" in data for kind, data in result.console)
    finally:
        await sess.destroy()


async def test_a_deactivated_key_gets_auth_failed(api: AsyncSession, server: Any) -> None:
    created = await api.Admin.create_keypair(user_id="sdk-user")
    user = APIConfig(endpoint=server.endpoint, access_key=created.access_key, secret_key=created.secret_key)
    async with AsyncSession(user) as as_user:
        assert (await as_user.auth_test("x")).authorized == "yes"
        with pytest.raises(domain.InsufficientPrivilege):
            await as_user.Admin.list_keypairs()
        await api.Admin.deactivate_keypair(created.access_key)
        with pytest.raises(domain.AuthFailed):
            await as_user.auth_test("x")
    await api.Admin.delete_keypair(created.access_key)


def test_the_blocking_api(config: APIConfig) -> None:
    with Session(config) as api:
        assert api.server_version().version == "v8.20240915"
        sess = api.ComputeSession.get_or_create("python", name=new_name())
        try:
            result = sess.execute(None, "print(6 * 7)")
            while result.status == "continued":
                result = sess.execute(result.run_id, "", mode="continue")
            assert result.exit_code == 0
            with sess.stream_execute("print('streamed')") as stream:
                frames = list(stream)
            assert frames[-1].status == "finished"
            assert "".join(d for f in frames for k, d in f.console if k == "stdout") == "streamed\n"
        finally:
            stats = sess.destroy()
        assert stats.status == "terminated"


def test_the_blocking_run_returns_the_whole_run(config: APIConfig) -> None:
    code = "print('start')\nname = input('who? ')\nprint('hi', name)\nimport sys\nprint('warn', file=sys.stderr)"
    with Session(config) as api:
        sess = api.ComputeSession.get_or_create("python", name=new_name())
        try:
            streamed: list[tuple[str, Any]] = []
            out = sess.run(code, stdin="bob\n", on_output=lambda kind, data: streamed.append((kind, data)))
            assert (out.status, out.exit_code) == ("finished", 0)
            assert (out.stdout, out.stderr) == ("start\nwho? hi bob\n", "warn\n")
            assert streamed == out.console
            assert out.stats is not None and out.stats.wall_ms > 0
            failed = sess.run("raise KeyError('k')")
            assert failed.exit_code == 1 and "KeyError" in failed.stderr
        finally:
            sess.destroy()


async def test_run_asks_a_callback_for_input(api: AsyncSession) -> None:
    sess = await api.ComputeSession.get_or_create("python", name=new_name())
    prompts: list[str] = []

    def answer(prompt: str) -> str:
        prompts.append(prompt)
        return str(len(prompts))

    try:
        out = await sess.run("a = input('a? ')\nb = input('b? ')\nprint(int(a) + int(b))", stdin=answer)
    finally:
        await sess.destroy()
    assert prompts == ["a? ", "b? "]
    assert out.stdout == "a? b? 3\n"
