"""The hostile-code tests of ``test_hostile_sessions`` (memory bomb, fork bomb, an
infinite loop, kill -1, killing PID 1, denied syscalls), run again through the API of
an embedded server on the docker backend. Skipped with the reason where Docker or the
image is missing."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, ServerThread
from docker_sandbox import docker_unavailable

from tests.apiclient import SignedClient

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

LOCAL_ONLY = {
    # the image's own root holds /root (empty, mode 0700), where the local sandbox shows none of the host's
    "test_no_server_secret_in_the_sandbox",
}


def _load(name: str) -> None:
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_docker_hostile_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for attr, value in vars(module).items():
        if (attr.startswith("test_") and callable(value) and attr not in LOCAL_ONLY) or attr == "neighbour":
            globals()[attr] = value


_load("test_hostile_sessions")


@pytest.fixture(scope="module")
def docker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    thread = ServerThread(tmp_path_factory.mktemp("bai-docker"), backend="docker")  # type: ignore[arg-type]
    running = thread.start()
    try:
        yield running
    finally:
        thread.stop()


@pytest.fixture
def api(docker_server: RunningServer) -> Iterator[SignedClient]:
    client = SignedClient(docker_server.endpoint, docker_server.access_key, docker_server.secret_key)
    yield client
    client.close()
