"""The file-transfer attacks of ``test_file_attacks`` (uploads, downloads and listings
through planted links to host files and dirs, a linked parent directory, another
session's file, links inside a downloaded tree, fifos and sockets, hard links, a
directory swapped for a link during uploads; each against openat2 and against the walk)
run again on the docker backend, whose agent reads and writes the container's scratch
dir from the host as the local one does. ``bai_server`` is the run's docker server.
Skipped with the reason where Docker or the image is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RunningServer
from docker_sandbox import docker_unavailable, share

from tests.capabilities import needs

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]

share(Path(__file__).with_name("test_file_attacks.py"), globals(), fixtures={"resolver", "session", "outside"})


@pytest.fixture
def bai_server(docker_server: RunningServer) -> RunningServer:
    assert docker_server.server.agent.backend.name == "docker"
    return docker_server
