"""``bai manager`` and ``bai agent`` as an operator runs them, each stopped by SIGTERM or
SIGINT while it holds work (a live session, a connected event stream): each ends within
its stop bound with nothing abandoned, and the stream's client is told the end. Real
processes: the installed commands, in subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_sandbox import sandbox_unavailable
from tests.apiclient import SignedClient
from tests.capabilities import require_or_skip
from tests.e2e.test_server_stop import BAI, EXIT_WAIT_S, STOP_BOUND_S, line_matching, read_env
from tests.waiting import wait_for

pytestmark = pytest.mark.sandbox

Started = tuple[subprocess.Popen[str], dict[str, str], Path]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Started]:
    if reason := sandbox_unavailable():
        require_or_skip("sandbox", reason)
    data = tmp_path / "manager"
    with subprocess.Popen([BAI, "manager", "--data-dir", str(data), "--port", "0"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            line_matching(proc.stdout, r"bai manager listening on http://", [])
            yield proc, read_env(data / "client.env"), data
        finally:
            if proc.poll() is None:
                proc.kill()


def agent_of(manager: Started, data: Path) -> subprocess.Popen[str]:
    _, env, manager_data = manager
    return subprocess.Popen(
        [BAI, "agent", "--manager", env["BACKEND_ENDPOINT"], "--agent-id", "node-1", "--rpc-port", "0",
         "--cluster-secret-file", str(manager_data / "cluster.secret"), "--data-dir", str(data),
         "--heartbeat", "0.2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def stopped(proc: subprocess.Popen[str], signum: signal.Signals) -> tuple[float, str]:
    """Send ``signum``; the exit must be clean. Returns how long it took and what it printed."""
    began = time.monotonic()
    proc.send_signal(signum)
    code = proc.wait(EXIT_WAIT_S)
    took = time.monotonic() - began
    output = proc.stdout.read() if proc.stdout is not None else ""
    assert code == 0, output
    return took, output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_agent_and_its_manager_stop_within_their_bound(manager: Started, tmp_path: Path,
                                                          signum: signal.Signals) -> None:
    proc, env, _ = manager
    with agent_of(manager, tmp_path / "agent") as agent, SignedClient(
        env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"]
    ) as api:
        try:
            wait_for(lambda: api.post("/session", {"image": "python", "name": "live"}).status_code == 201,
                     what="a session on the joined agent")
            assert api.run("live", "print('running')")["status"] == "finished"
            with subprocess.Popen([BAI, "events"], env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as follower:
                line_matching(follower.stderr, r"following the events", [])
                agent_took, agent_output = stopped(agent, signum)  # it destroys its live sandbox
                manager_took, manager_output = stopped(proc, signum)  # with a stream connected
                # the stream ended cleanly: the manager closed it, the follower was not cut off
                assert follower.wait(EXIT_WAIT_S) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
    # each step of each stop finished by itself: none failed, was abandoned at the bound or left behind
    for output in (agent_output, manager_output):
        assert not re.search(r"stop: .*(failed|abandoned|exiting without)", output), output
    assert agent_took <= STOP_BOUND_S and manager_took <= STOP_BOUND_S, (agent_took, manager_took)
