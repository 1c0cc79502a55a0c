"""The local backend's terminal tests (``test_pty``: a shell on a real pty in the
session's sandbox, exit codes, resize, Ctrl-C, bad frames, restart, several terminals,
hang-up, a flood, another keypair's session, TIOCSTI, the SDK) run again on the docker
backend: ``bai_server`` is the run's docker server. Skipped with the reason where Docker
or the image is missing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import RunningServer
from docker_sandbox import docker_unavailable, share

from tests.apiclient import SignedClient
from tests.capabilities import needs

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]

LOCAL_ONLY = {
    # the image has no ps: there, the local test would pass without looking; a variant below reads /proc
    "test_closing_the_socket_hangs_the_shell_up",
    # the agent's RPC route checks the cluster secret before any backend is asked
    "test_the_agent_terminal_route_wants_the_cluster_secret",
    # the agent's relay of a terminal to a remote manager: the same sandbox terminal as above, 7 s more
    "test_a_terminal_on_a_remote_agent",
    # the manager's idle clock (kept going by an open terminal): no part of the backend's
    "test_an_open_terminal_keeps_its_session_from_idling_out",
}

PTY = share(Path(__file__).with_name("test_pty.py"), globals(), local_only=LOCAL_ONLY, fixtures={"session"})


@pytest.fixture
def bai_server(docker_server: RunningServer) -> RunningServer:
    assert docker_server.server.agent.backend.name == "docker"
    return docker_server


PROCESSES = (
    "import os\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        print(open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode())\n"
    "    except OSError:\n"
    "        pass\n"
)


def test_closing_the_socket_hangs_the_shell_up_in_a_container(api: SignedClient, session: str) -> None:
    with PTY.open_pty(api, session) as ws:
        PTY.type_in(ws, "sleep 1000 & echo $! > bgpid; sleep 999\n")
        time.sleep(1)
        seen = "".join(data for _, data in api.run(session, PROCESSES)["console"])
        assert "sleep 999" in seen and "bash -i" in seen, seen  # the probe sees the shell while it lives
    time.sleep(1)
    out = "".join(data for _, data in api.run(session, PROCESSES)["console"])
    assert "sleep 999" not in out, out
    assert "bash -i" not in out, out
