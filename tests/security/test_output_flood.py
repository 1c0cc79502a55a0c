"""Output floods through the API: past the run's output limit (the agent's default,
8 MiB) output is dropped with one marker line, the agent's buffer stays bounded,
the runner is never blocked on it, and the session and its neighbours keep working; on
both backends (``[local]``, ``[docker]``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bai.agent.runs import OUTPUT_LIMIT
from tests.apiclient import SignedClient, stderr_of, stdout_of
from tests.conftest import RunningServer

pytestmark = [pytest.mark.sandbox, pytest.mark.backends]

MARKER = "[bai] output truncated: this run wrote more than 8 MiB; the rest was discarded\n"
BACKLOG_BOUND = OUTPUT_LIMIT + 2**20  # what the agent may hold for one run, at most (plus notes)


def make_session(api: SignedClient) -> str:
    name = f"fl-{uuid.uuid4().hex[:8]}"
    assert api.post("/session", {"image": "python", "name": name}).status_code == 201
    return name


@pytest.fixture
def session(api: SignedClient) -> Iterator[str]:
    name = make_session(api)
    yield name
    api.delete(f"/session/{name}")


@pytest.fixture
def neighbour(api: SignedClient) -> Iterator[str]:
    name = make_session(api)
    api.run(name, "canary = 'alive'")
    yield name
    api.delete(f"/session/{name}")


def backlog_of(server: RunningServer, api: SignedClient, name: str) -> int:
    """What the agent buffers for the session's current run, bytes."""
    session_id = api.get(f"/session/{name}").json()["sessionId"]
    return server.server.agent.sessions[session_id].runs.backlog_bytes


def written_by(server: RunningServer, api: SignedClient, name: str) -> int:
    """What the session's current run has written so far, dropped bytes included."""
    session_id = api.get(f"/session/{name}").json()["sessionId"]
    run = server.server.agent.sessions[session_id].runs.current
    assert run is not None
    return run.output_bytes


def rss() -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def follow(api: SignedClient, name: str, first: dict[str, Any], on_step: Any = None) -> dict[str, Any]:
    """Continue a run to its end; the result holds every answer's console."""
    result, console = first, list(first["console"])
    for _ in range(1000):
        if result["status"] != "continued":
            break
        if on_step is not None:
            on_step()
        answer = api.post(f"/session/{name}", {"mode": "continue", "runId": result["runId"]})
        result = answer.json()["result"]
        console += result["console"]
    return {**result, "console": console}


def test_a_finite_flood_is_truncated_with_one_marker(
    bai_server: RunningServer, api: SignedClient, session: str
) -> None:
    code = (
        "import sys\nfor _ in range(50 * 1024):\n    sys.stdout.write('x' * 1023 + '\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    first = api.post(f"/session/{session}", {"mode": "query", "code": code}).json()["result"]
    backlogs: list[int] = []
    result = follow(api, session, first, lambda: backlogs.append(backlog_of(bai_server, api, session)))
    assert result["status"] == "finished" and result["exitCode"] == 0
    assert max(backlogs) <= BACKLOG_BOUND
    out, err = stdout_of(result), stderr_of(result)
    assert out == ("x" * 1023 + "\n") * 8192  # exactly the first 8 MiB, whole lines here
    assert err == MARKER  # once; what came after the cut ("after") is dropped too
    stats = result["options"]["stats"]
    assert stats["output_bytes"] == 50 * 2**20 + len("after\n")
    assert stats["output_truncated"] is True
    after = api.run(session, "print('next')")
    assert stdout_of(after) == "next\n"
    assert after["options"]["stats"]["output_truncated"] is False


def test_an_endless_flood_is_dropped_while_neighbours_work(
    bai_server: RunningServer, api: SignedClient, session: str, neighbour: str
) -> None:
    first = api.post(f"/session/{session}", {"mode": "query", "code": "while True:\n    print('x' * 1000)\n"})
    run_id = first.json()["result"]["runId"]
    console = list(first.json()["result"]["console"])
    # read until the limit is reached: from then on the agent drops what comes
    while not any(kind == "stderr" and MARKER in data for kind, data in console):
        answer = api.post(f"/session/{session}", {"mode": "continue", "runId": run_id}).json()["result"]
        assert answer["status"] == "continued"
        console += answer["console"]
    rss_at_limit = rss()
    # nobody reads: the flood goes on past twice the limit (the runner is not blocked) and
    # costs no memory, while the neighbour answers
    neighbour_runs = 0
    deadline = time.monotonic() + 60
    while neighbour_runs < 3 or written_by(bai_server, api, session) <= 2 * OUTPUT_LIMIT:
        assert time.monotonic() < deadline, "the flood stopped: is the runner blocked?"
        assert stdout_of(api.run(neighbour, "print(canary)")) == "alive\n"
        neighbour_runs += 1
        assert backlog_of(bai_server, api, session) <= BACKLOG_BOUND
    assert rss() - rss_at_limit < 64 * 2**20
    assert api.post(f"/session/{session}/interrupt").status_code == 204
    last = follow(api, session, {"status": "continued", "runId": run_id, "console": []})
    # the interrupt's traceback came after the cut: dropped like the rest, but the exit code says it
    assert (last["status"], last["exitCode"]) == ("finished", 1)
    everything = console + last["console"]
    assert sum(data.count(MARKER) for kind, data in everything if kind == "stderr") == 1
    assert sum(len(data) for kind, data in everything if kind == "stdout") <= OUTPUT_LIMIT
    stats = last["options"]["stats"]
    assert stats["output_truncated"] is True
    assert stats["output_bytes"] > 2 * OUTPUT_LIMIT  # it kept writing after the cut
    assert stdout_of(api.run(session, "print('next')")) == "next\n"
