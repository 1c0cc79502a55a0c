"""Shared fixtures: a real embedded server (manager + local agent + HTTP on an
ephemeral port) running in a thread with its own event loop, so that sync tests,
async tests and subprocesses can all talk to it."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.agent_sandbox import sandbox_unavailable
from tests.apiclient import SignedClient
from tests.capabilities import (
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_setup,
    require_or_skip,
)

# the one check, shared with the agent's tests; the capability hooks (BAI_TEST_REQUIRE)
__all__ = ["pytest_collection_modifyitems", "pytest_configure", "pytest_runtest_setup", "sandbox_unavailable"]

if TYPE_CHECKING:
    from bai.server.embedded import EmbeddedServer


@dataclass
class RunningServer:
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path
    server: EmbeddedServer
    loop: asyncio.AbstractEventLoop
    env: dict[str, str] = field(default_factory=dict)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop (e.g. to poke at the manager)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class ServerThread:
    def __init__(self, data_dir: Path, **options: float) -> None:
        from bai.server.embedded import EmbeddedServer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bai-server", daemon=True)
        self.server = EmbeddedServer(data_dir, "127.0.0.1", 0, **options)

    def start(self) -> RunningServer:
        self.thread.start()
        creds = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        env = dict(os.environ)
        env.update(
            BACKEND_ENDPOINT=creds.endpoint,
            BACKEND_ACCESS_KEY=creds.access_key,
            BACKEND_SECRET_KEY=creds.secret_key,
        )
        return RunningServer(creds.endpoint, creds.access_key, creds.secret_key, self.server.data_dir,
                             self.server, self.loop, env)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _serve(data_dir: Path, **options: float) -> Iterator[RunningServer]:
    reason = sandbox_unavailable()
    if reason:
        require_or_skip("sandbox", f"needs real sandboxes: {reason}")
    thread = ServerThread(data_dir, **options)
    running = thread.start()
    try:
        yield running
    finally:
        thread.stop()


@pytest.fixture(scope="session")
def bai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One embedded server for the whole run; tests isolate by session names and keypairs."""
    yield from _serve(tmp_path_factory.mktemp("bai-data"))


def serve_docker(data_dir: Path, **options: float) -> Iterator[RunningServer]:
    """What ``bai_server`` and ``fresh_server`` do, on the docker backend: the modules that
    run the local backend's API tests on docker make their fixtures of it."""
    from tests.docker_sandbox import docker_unavailable

    reason = docker_unavailable()
    if reason:
        require_or_skip("docker", f"needs the docker backend: {reason}")
    thread = ServerThread(data_dir, backend="docker", **options)  # type: ignore[arg-type]
    running = thread.start()
    try:
        yield running
    finally:
        thread.stop()


@pytest.fixture(scope="session")
def docker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One embedded server on the docker backend for the whole run: the modules that run
    the local backend's API tests on docker give it as their ``bai_server``."""
    yield from serve_docker(tmp_path_factory.mktemp("bai-docker"))


@pytest.fixture
def fresh_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """A server of the test's own, for tests that change global state (agents, restarts).
    Options for EmbeddedServer come from ``@pytest.mark.parametrize("fresh_server", [{...}],
    indirect=True)``."""
    yield from _serve(tmp_path / "data", **getattr(request, "param", {}))


@pytest.fixture
def api(bai_server: RunningServer) -> Iterator[SignedClient]:
    """A signed client of the shared server, with its admin keypair."""
    client = SignedClient(bai_server.endpoint, bai_server.access_key, bai_server.secret_key)
    yield client
    client.close()
