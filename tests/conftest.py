"""Shared fixtures: a real embedded server (manager + local agent + HTTP on an
ephemeral port) running in a thread with its own event loop, so that sync tests,
async tests and subprocesses can all talk to it."""

from __future__ import annotations

import asyncio
import functools
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
    needs,
    pytest_collection_modifyitems,
    pytest_runtest_setup,
    require_or_skip,
)
from tests.capabilities import pytest_configure as configure_capabilities

# the one check, shared with the agent's tests; the capability hooks (BAI_TEST_REQUIRE)
__all__ = ["pytest_collection_modifyitems", "pytest_runtest_setup", "sandbox_unavailable"]


def pytest_configure(config: pytest.Config) -> None:
    configure_capabilities(config)
    config.addinivalue_line("markers", "backends: the module's server tests run on each backend, [local] and [docker]")
    config.addinivalue_line("markers", "local_only(reason): in a backends module, runs on the local backend only")
    config.addinivalue_line("markers", "docker_only(reason): in a backends module, runs on the docker backend only")

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


#: the backends a module marked ``backends`` runs its tests on, each as a test id
BACKENDS = ("local", "docker")


def _serve(data_dir: Path, backend: str = "local", **options: float) -> Iterator[RunningServer]:
    """An embedded server on ``backend`` for as long as the generator is held; skipped (or
    failed, where demanded: tests/capabilities.py) with the reason where it cannot run."""
    if backend == "local" and (reason := sandbox_unavailable()):
        require_or_skip("sandbox", f"needs real sandboxes: {reason}")
    if backend == "docker" and (reason := docker_reason()):
        require_or_skip("docker", f"needs the docker backend: {reason}")
    thread = ServerThread(data_dir, backend=backend, **options)  # type: ignore[arg-type]
    running = thread.start()
    try:
        yield running
    finally:
        thread.stop()


@functools.cache
def docker_reason() -> str | None:
    """tests/docker_sandbox.py's probe, asked once per run and only by a run that has a
    docker param: why the docker backend cannot be tested here, or None."""
    from tests.docker_sandbox import docker_unavailable

    return docker_unavailable()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Backend parity by parametrisation: a test of a module (or class) marked ``backends``
    that uses the ``backend`` fixture (``bai_server``, ``fresh_server`` and ``api`` do) runs
    once per backend, ``[local]`` and ``[docker]``; ``local_only(reason=...)`` keeps a test
    to ``[local]`` (it looks at the local sandbox's own parts, or at the manager alone),
    ``docker_only(reason=...)`` to ``[docker]`` (the same behaviour on the container's parts)."""
    definition = metafunc.definition
    if "backend" not in metafunc.fixturenames or definition.get_closest_marker("backends") is None:
        return
    params = []
    if definition.get_closest_marker("docker_only") is None:
        params.append(pytest.param("local", id="local"))
    if definition.get_closest_marker("local_only") is None:
        params.append(pytest.param("docker", id="docker", marks=needs("docker", docker_reason())))
    metafunc.parametrize("backend", params)


@pytest.fixture
def backend() -> str:
    """The backend the test's servers run on: "local", unless its module is marked
    ``backends`` (then ``pytest_generate_tests`` gives each of ``BACKENDS``)."""
    return "local"


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One embedded server on the local backend for the whole run."""
    yield from _serve(tmp_path_factory.mktemp("bai-data"))


@pytest.fixture(scope="session")
def docker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One embedded server on the docker backend for the whole run."""
    yield from _serve(tmp_path_factory.mktemp("bai-docker"), backend="docker")


@pytest.fixture
def bai_server(backend: str, request: pytest.FixtureRequest) -> RunningServer:
    """The run's embedded server on the test's backend (``local_server`` or
    ``docker_server``, each one for the whole run); tests isolate by session names and
    keypairs."""
    server: RunningServer = request.getfixturevalue(f"{backend}_server")
    assert server.server.agent.backend.name == backend
    return server


@pytest.fixture
def fresh_server(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """A server of the test's own on the test's backend, for tests that change global
    state (agents, restarts). Options for EmbeddedServer come from
    ``@pytest.mark.parametrize("fresh_server", [{...}], indirect=True)`` (a ``backend`` there
    wins over the test's)."""
    options = dict(getattr(request, "param", {}))
    yield from _serve(tmp_path / "data", options.pop("backend", backend), **options)


@pytest.fixture
def api(bai_server: RunningServer) -> Iterator[SignedClient]:
    """A signed client of the shared server, with its admin keypair."""
    client = SignedClient(bai_server.endpoint, bai_server.access_key, bai_server.secret_key)
    yield client
    client.close()
