"""Per-run statistics through the real API: ``options.stats`` of a run's last
answer (HTTP and the streaming WebSocket), from the sandbox's cgroup, on both backends
(``[local]``, ``[docker]``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.apiclient import SignedClient, stdout_of
from tests.capabilities import require_or_skip

pytestmark = [pytest.mark.sandbox, pytest.mark.backends]

# 0.3 s of CPU time, not of wall time: on a busy host the spin may get less than a core
SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
# bytes * n writes every byte: the pages are touched, not just reserved
ALLOCATE = "x = b'x' * (150 * 10**6)\ndel x\n"
STATS_KEYS = {"cpu_ms", "wall_ms", "mem_peak", "mem_peak_scope", "output_bytes", "output_truncated", "oom_kills"}


@pytest.fixture
def session(api: SignedClient) -> Iterator[str]:
    name = f"st-{uuid.uuid4().hex[:8]}"
    assert api.post("/session", {"image": "python", "name": name}).status_code == 201
    yield name
    api.delete(f"/session/{name}")


def query(api: SignedClient, session: str, code: str) -> dict[str, Any]:
    """The first answer only: the server's 2 s flush timeout may end it before the run
    does, so a test that needs the end (its stats) follows it with ``api.run``."""
    response = api.post(f"/session/{session}", {"mode": "query", "code": code})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def stats_of(result: dict[str, Any]) -> dict[str, Any]:
    assert result["status"] == "finished", result
    stats: dict[str, Any] = result["options"]["stats"]
    assert set(stats) == STATS_KEYS
    return stats


def test_a_cpu_spin_reports_its_cpu_and_wall_time(api: SignedClient, session: str) -> None:
    stats = stats_of(api.run(session, SPIN))
    assert stats["cpu_ms"] >= 300
    assert stats["wall_ms"] >= 300
    assert stats["cpu_ms"] <= stats["wall_ms"] + 50  # one thread: no more CPU than time


def test_the_memory_peak_is_the_runs_own(api: SignedClient, session: str) -> None:
    big = stats_of(api.run(session, ALLOCATE))
    assert big["mem_peak"] >= 150 * 10**6
    small = stats_of(api.run(session, "y = 1"))
    if small["mem_peak_scope"] == "session":
        require_or_skip("platform", "this kernel cannot reset the memory peak (cgroup v2 before Linux 6.12)")
    assert small["mem_peak_scope"] == "run"
    assert small["mem_peak"] < big["mem_peak"] / 3


def test_one_plus_one_has_small_figures(api: SignedClient, session: str) -> None:
    stats = stats_of(api.run(session, "1+1"))
    assert 0 <= stats["cpu_ms"] < 100
    assert 0 <= stats["wall_ms"] < 1000
    assert 0 < stats["mem_peak"] < 100 * 2**20
    assert (stats["output_bytes"], stats["output_truncated"]) == (2, False)  # "2\n"


def test_no_stats_while_a_run_goes_on(api: SignedClient, session: str) -> None:
    waiting = query(api, session, "print(input('name? '))")
    assert waiting["status"] == "waiting-input"
    assert "stats" not in waiting["options"]
    answered = api.post(f"/session/{session}", {"mode": "input", "runId": waiting["runId"], "code": "bai"})
    stats = stats_of(answered.json()["result"])
    assert stats["output_bytes"] == len("name? bai\n")

    size = 600 * 1024  # over one response's stream cap: the first answer is "continued"
    first = query(api, session, f"print('z' * {size})")
    answers = [first]
    while answers[-1]["status"] == "continued":
        answers.append(api.post(f"/session/{session}", {"mode": "continue", "runId": first["runId"]}).json()["result"])
    assert len(answers) >= 2  # the first answer was "continued"
    assert all("stats" not in answer["options"] for answer in answers[:-1])
    assert stats_of(answers[-1])["output_bytes"] == size + 1


def test_the_streaming_executes_last_frame_has_the_stats(api: SignedClient, session: str) -> None:
    path = f"/stream/session/{session}/execute"
    headers = api.headers("GET", path, b"", None)
    with connect("ws" + api.endpoint[4:] + path, additional_headers=headers, open_timeout=10) as ws:
        ws.send(json.dumps({"code": SPIN + "print('done')", "mode": "query", "options": {}}))
        frames = []
        while not frames or frames[-1]["status"] == "continued":
            frames.append(json.loads(ws.recv(timeout=20)))
    assert all("stats" not in frame["options"] for frame in frames[:-1])
    stats = stats_of(frames[-1])
    assert stats["cpu_ms"] >= 200 and stats["output_bytes"] == len("done\n")


def test_state_and_output_are_unchanged_by_the_accounting(api: SignedClient, session: str) -> None:
    api.run(session, "x = 41")
    result = api.run(session, "print(x + 1)")
    assert stdout_of(result) == "42\n"
    assert result["options"]["stats"]["output_bytes"] == 3
