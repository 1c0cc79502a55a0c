"""``bai server`` as an operator runs it: what its first start prints, and a stop that
ends every stream. Real processes: the server and ``bai events`` are the installed
commands, in subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_sandbox import sandbox_unavailable
from tests.apiclient import SignedClient
from tests.capabilities import require_or_skip

pytestmark = pytest.mark.sandbox

BAI = str(Path(sys.executable).with_name("bai"))
#: how long a test waits for a process that must exit; the server's own bound is its
#: stop grace (2 s): past that it cancels what is left, it does not wait on the client
EXIT_WAIT_S = 30


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def line_matching(stream: object, pattern: str, seen: list[str]) -> re.Match[str]:
    """The first line of ``stream`` that matches; every line read is kept in ``seen``."""
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        seen.append(line)
        if found := re.search(pattern, line):
            return found
    raise AssertionError(f"the stream ended before a line matched {pattern!r}: {''.join(seen)}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], list[str]]]:
    if reason := sandbox_unavailable():
        require_or_skip("sandbox", reason)
    data = tmp_path / "data"
    with subprocess.Popen([BAI, "server", "--data-dir", str(data), "--port", "0"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        printed: list[str] = []
        try:
            line_matching(proc.stdout, r"listening on http://", printed)
            yield proc, read_env(data / "client.env"), printed
        finally:
            if proc.poll() is None:
                proc.kill()


def test_the_first_start_says_where_the_credentials_are_not_what_they_are(server) -> None:  # type: ignore[no-untyped-def]
    _, env, printed = server
    output = "".join(printed)
    assert env["BACKEND_SECRET_KEY"] not in output
    assert "client.env" in output and env["BACKEND_ACCESS_KEY"] in output


def test_a_stop_ends_a_connected_event_stream_and_exits(server) -> None:  # type: ignore[no-untyped-def]
    proc, env, _ = server
    with subprocess.Popen([BAI, "events"], env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as follower:
        _follow_through_a_stop(proc, env, follower)


def _follow_through_a_stop(proc: subprocess.Popen[str], env: dict[str, str],
                           follower: subprocess.Popen[str]) -> None:
    try:
        line_matching(follower.stderr, r"following the events", [])
        with SignedClient(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"]) as api:
            # a session's events reaching `bai events` prove its stream is connected; the
            # session stays live, so the stop has a sandbox to destroy too
            assert api.post("/session", {"image": "python", "name": "watched"}).status_code == 201
            line_matching(follower.stdout, r"session_started\s+watched", [])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_WAIT_S) == 0
        # the stream ended cleanly (the server closed it), so the follower ends too
        assert follower.wait(EXIT_WAIT_S) == 0, follower.stderr.read() if follower.stderr else ""
    finally:
        if follower.poll() is None:
            follower.kill()
