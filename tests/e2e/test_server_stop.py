"""``bai server`` as an operator runs it: what its first start prints, a stop that ends
every stream, answers every create that waits and ends within its bound, and a create
whose client goes away. Real processes: the server and ``bai events`` are the installed
commands, in subprocesses; the store is read from its SQLite file after the stop."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.agent_sandbox import sandbox_unavailable
from tests.apiclient import SignedClient
from tests.capabilities import require_or_skip
from tests.waiting import wait_for

pytestmark = pytest.mark.sandbox

BAI = str(Path(sys.executable).with_name("bai"))
#: how long a test waits for a process that must exit (a hang's bound, not what is measured)
EXIT_WAIT_S = 30
#: what a stop may take by default (bai.common.stopping.DEFAULT_STOP_TIMEOUT_S): measured here
STOP_BOUND_S = 5.0
#: the statuses of a session that is not over
LIVE = ("PENDING", "SCHEDULED", "PREPARING", "RUNNING", "RESTARTING", "TERMINATING")


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
            env = read_env(data / "client.env")
            env["BAI_TEST_DATA_DIR"] = str(data)  # where the test reads the store
            yield proc, env, printed
        finally:
            if proc.poll() is None:
                proc.kill()


def test_the_first_start_says_where_the_credentials_are_not_what_they_are(server) -> None:  # type: ignore[no-untyped-def]
    _, env, printed = server
    output = "".join(printed)
    assert env["BACKEND_SECRET_KEY"] not in output
    assert "client.env" in output and env["BACKEND_ACCESS_KEY"] in output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_ends_a_connected_event_stream_and_exits(server, signum: signal.Signals) -> None:  # type: ignore[no-untyped-def]
    proc, env, _ = server
    with subprocess.Popen([BAI, "events"], env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as follower:
        _follow_through_a_stop(proc, env, follower, signum)


def _follow_through_a_stop(proc: subprocess.Popen[str], env: dict[str, str],
                           follower: subprocess.Popen[str], signum: signal.Signals) -> None:
    try:
        line_matching(follower.stderr, r"following the events", [])
        with SignedClient(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"]) as api:
            # a session's events reaching `bai events` prove its stream is connected; the
            # session stays live, so the stop has a sandbox to destroy too
            assert api.post("/session", {"image": "python", "name": "watched"}).status_code == 201
            line_matching(follower.stdout, r"session_started\s+watched", [])
        proc.send_signal(signum)
        assert proc.wait(EXIT_WAIT_S) == 0
        # the stream ended cleanly (the server closed it), so the follower ends too
        assert follower.wait(EXIT_WAIT_S) == 0, follower.stderr.read() if follower.stderr else ""
    finally:
        if follower.poll() is None:
            follower.kill()


def _signed(env: dict[str, str]) -> SignedClient:
    return SignedClient(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"])


def _fill_the_agent(api: SignedClient) -> None:
    """A running session that takes every free core, so that the next create waits for a place."""
    agent = api.get("/admin/agents").json()["items"][0]
    cpus = str(Decimal(agent["capacity"]["cpu"]) - Decimal(agent["occupied"].get("cpu", "0")))
    created = api.post("/session", {"image": "python", "name": "all-cores", "config": {"resources": {"cpu": cpus}}})
    assert created.status_code == 201 and created.json()["status"] == "RUNNING", created.text


def _status_of(api: SignedClient, name: str) -> str | None:
    answer = api.get(f"/session/{name}")
    return answer.json()["status"] if answer.status_code == 200 else None


def _live_rows(data_dir: str) -> list[tuple[str, str]]:
    with sqlite3.connect(Path(data_dir) / "bai.sqlite3") as db:
        marks = ",".join("?" * len(LIVE))
        return db.execute(f"SELECT name, status FROM sessions WHERE status IN ({marks})", LIVE).fetchall()


def _rest_of(proc: subprocess.Popen[str], printed: list[str]) -> str:
    assert proc.stdout is not None
    return "".join(printed) + proc.stdout.read()


def test_a_stop_answers_the_creates_waiting_for_a_place_and_ends_within_its_bound(server) -> None:  # type: ignore[no-untyped-def]
    """The hang of issue 17: a create waiting for a place kept its request open, the HTTP
    server's drain waited on that request, and the session would be ended only after the
    drain. The stop now answers the waits first: nothing is cancelled by uvicorn's grace."""
    proc, env, printed = server
    answers: dict[str, tuple[int, str]] = {}

    def create(name: str) -> None:
        with _signed(env) as client:
            answer = client.post("/session", {"image": "python", "name": name})
            answers[name] = (answer.status_code, answer.json().get("status", answer.text))

    with _signed(env) as api:
        _fill_the_agent(api)
        waiting = [threading.Thread(target=create, args=(f"queued-{i}",)) for i in range(3)]
        for thread in waiting:
            thread.start()
        wait_for(lambda: all(_status_of(api, f"queued-{i}") == "PENDING" for i in range(3)), what="3 queued creates")
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(EXIT_WAIT_S) == 0
    took = time.monotonic() - began
    for thread in waiting:
        thread.join(EXIT_WAIT_S)
    output = _rest_of(proc, printed)
    assert took <= STOP_BOUND_S, output
    assert answers == {f"queued-{i}": (201, "CANCELLED") for i in range(3)}, output
    assert "timeout graceful shutdown exceeded" not in output and "stop:" not in output, output
    assert _live_rows(env["BAI_TEST_DATA_DIR"]) == []


def test_a_create_whose_client_goes_away_while_it_waits_for_a_place_is_cancelled(server) -> None:  # type: ignore[no-untyped-def]
    proc, env, printed = server
    with _signed(env) as api:
        _fill_the_agent(api)
        body = json.dumps({"image": "python", "name": "abandoned"}).encode()
        headers = api.headers("POST", "/session", body, "application/json")
        endpoint = urlsplit(env["BACKEND_ENDPOINT"])
        head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Host": endpoint.netloc,
                                                     "Content-Length": str(len(body))}.items())
        with socket.create_connection((endpoint.hostname, endpoint.port)) as client:
            client.sendall(f"POST /session HTTP/1.1\r\n{head}\r\n".encode() + body)
            wait_for(lambda: _status_of(api, "abandoned") == "PENDING", what="the create to wait for a place")
        # the client went away: nobody is left to use the session, so it waits no more
        wait_for(lambda: _status_of(api, "abandoned") == "CANCELLED", what="the abandoned create to be cancelled")
        info = api.get("/session/abandoned").json()
        assert info["statusInfo"].startswith("client-gone")
        assert [s["sessionName"] for s in api.get("/session").json()["items"]] == ["all-cores"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(EXIT_WAIT_S) == 0, _rest_of(proc, printed)
    assert _live_rows(env["BAI_TEST_DATA_DIR"]) == []
