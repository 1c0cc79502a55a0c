"""The local backend's file-transfer tests (``test_session_files``: upload, download,
listing, the path rules, the limits, a transfer while a run is busy, another keypair's
session, an upload past the scratch cap) run again on the docker backend: the agent
reads and writes the container's scratch dir from the host (``DockerSandbox.work_dir``).
``bai_server`` is the run's docker server and ``fresh_server`` a docker server of the
test's own. Skipped with the reason where Docker or the image is missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, serve_docker
from docker_sandbox import docker_unavailable, share

from tests.capabilities import needs

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]

share(Path(__file__).with_name("test_session_files.py"), globals(), fixtures={"session", "small_scratch"})


@pytest.fixture
def bai_server(docker_server: RunningServer) -> RunningServer:
    assert docker_server.server.agent.backend.name == "docker"
    return docker_server


@pytest.fixture
def fresh_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    yield from serve_docker(tmp_path / "data", **getattr(request, "param", {}))
