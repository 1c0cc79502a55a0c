"""Sessions and query-mode execution through the real API and real sandboxes, on both
backends (``[local]``, ``[docker]``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.apiclient import SignedClient, following, stderr_of, stdout_of, upload
from tests.waiting import wait_for

pytestmark = [pytest.mark.sandbox, pytest.mark.backends]


@pytest.fixture
def session(api: SignedClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    r = api.post("/session", {"image": "python", "name": name})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "RUNNING"
    yield name
    api.delete(f"/session/{name}")


def test_create_reuse_and_info(api: SignedClient, session: str) -> None:
    again = api.post("/session", {"image": "python", "name": session})
    assert again.status_code == 200
    assert again.json()["created"] is False
    info = api.get(f"/session/{session}").json()
    assert info["sessionName"] == session
    assert info["status"] == "RUNNING"
    assert info["image"] == "python"
    assert info["occupiedSlots"]["cpu"] == "1"
    assert info["lastStat"]["cpu_used"]["unit_hint"] == "msec"
    r = api.post("/session", {"image": "python", "name": session, "reuseIfExists": False})
    assert r.status_code == 400
    assert r.json()["type"].endswith("/session-already-exists")
    assert r.json()["data"]["existingSessionId"] == info["sessionId"]


def test_state_persists_and_queries_are_counted(api: SignedClient, session: str) -> None:
    assert api.run(session, "x = 41")["exitCode"] == 0
    result = api.run(session, "print(x + 1)")
    assert (result["status"], result["exitCode"], stdout_of(result)) == ("finished", 0, "42\n")
    assert api.get(f"/session/{session}").json()["numQueriesExecuted"] == 2


def test_stdout_and_stderr_keep_their_order(api: SignedClient, session: str) -> None:
    code = "import sys\nfor i in range(3):\n    print('out', i)\n    print('err', i, file=sys.stderr)\n"
    console = api.run(session, code)["console"]
    assert console == [[k, f"{k[3:]} {i}\n"] for i in range(3) for k in ("stdout", "stderr")]


def test_exceptions_and_exit_codes(api: SignedClient, session: str) -> None:
    failed = api.run(session, "def f():\n    raise ValueError('boom')\nf()")
    assert failed["exitCode"] == 1
    assert "ValueError: boom" in stderr_of(failed)
    assert "line 2" in stderr_of(failed)
    assert "bai" not in stderr_of(failed)  # no runner frames in the user's traceback
    assert api.run(session, "import sys; sys.exit(3)")["exitCode"] == 3
    assert api.run(session, "1/0")["exitCode"] == 1
    assert api.run(session, "print('alive')")["console"] == [["stdout", "alive\n"]]


def test_long_run_continues_after_the_flush_timeout(api: SignedClient, session: str) -> None:
    """The run goes on until the test uploads ``go``, which it does once it has seen the
    first line: every answer before that is a flush timeout's, however slow the host."""
    code = "import os, time\nprint(0, flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\nprint(1)\n"
    first = api.post(f"/session/{session}", {"mode": "query", "code": code}).json()["result"]
    assert first["status"] == "continued"
    answers = following(api, session, first, until="0\n")
    assert upload(api, session, [("go", b"")]).status_code == 204
    answers += following(api, session, answers[-1])[1:]
    assert answers[-1]["status"] == "finished"
    assert "".join(stdout_of(answer) for answer in answers) == "0\n1\n"


def test_input_round_trip(api: SignedClient, session: str) -> None:
    first = api.post(f"/session/{session}", {"mode": "query", "code": "name = input('who? ')\nprint('hi', name)"})
    result = first.json()["result"]
    assert result["status"] == "waiting-input"
    assert result["options"] == {"is_password": False}
    assert stdout_of(result) == "who? "
    answer = api.post(f"/session/{session}", {"mode": "input", "runId": result["runId"], "code": "ada"})
    assert stdout_of(answer.json()["result"]) == "hi ada\n"
    missing = api.post(f"/session/{session}", {"mode": "continue", "code": ""})
    assert missing.status_code == 400 and "runId" in missing.json()["msg"]


def test_interrupt_keeps_the_session_usable(api: SignedClient, session: str) -> None:
    api.run(session, "kept = 'yes'")
    spin = "print('spinning', flush=True)\nwhile True:\n    pass\n"
    first = api.post(f"/session/{session}", {"mode": "query", "code": spin})
    answers = following(api, session, first.json()["result"], until="spinning")
    assert api.post(f"/session/{session}/interrupt").status_code == 204
    answers += following(api, session, answers[-1])[1:]
    assert answers[-1]["exitCode"] == 1
    assert "KeyboardInterrupt" in "".join(stderr_of(answer) for answer in answers)
    assert stdout_of(api.run(session, "print(kept)")) == "yes\n"


def test_complete(api: SignedClient, session: str) -> None:
    api.run(session, "import collections\nmy_variable = 1")
    r = api.post(f"/session/{session}/complete", {"code": "my_var", "options": {"line": "my_var", "row": 0, "col": 6}})
    assert "my_variable" in r.json()["result"]["completions"]


def test_destroy_answers_stats_in_the_documented_shape(api: SignedClient) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    api.post("/session", {"image": "python", "name": name})
    api.run(name, "sum(i * i for i in range(2_000_000))")
    stats = api.delete(f"/session/{name}").json()["stats"]
    assert stats["version"] == 2 and stats["status"] == "terminated"
    for metric in ("cpu_used", "mem", "io_read", "io_write", "net_rx", "net_tx", "io_scratch_size"):
        assert isinstance(stats[metric]["current"], str), metric
    assert int(stats["cpu_used"]["current"]) > 0
    assert int(stats["mem"]["stats.max"]) > 0
    info = api.get(f"/session/{name}").json()
    assert info["status"] == "TERMINATED" and info["statusInfo"] == "user-requested"
    assert api.delete(f"/session/{name}").status_code == 404


def test_restart_loses_state_keeps_files(api: SignedClient, session: str) -> None:
    api.run(session, "x = 1\nopen('kept.txt', 'w').write('file')")
    assert api.patch(f"/session/{session}").status_code == 204
    assert api.run(session, "print(x)")["exitCode"] == 1
    assert stdout_of(api.run(session, "print(open('kept.txt').read())")) == "file\n"


def test_enqueue_only_returns_pending(api: SignedClient) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    r = api.post("/session", {"image": "python", "name": name, "enqueueOnly": True})
    assert r.status_code == 201
    # the answer does not wait; with a warm pool the session may already be up when it is sent
    assert r.json()["status"] in ("PENDING", "SCHEDULED", "PREPARING", "RUNNING")
    wait_for(lambda: api.get(f"/session/{name}").json()["status"] == "RUNNING", what=f"{name} RUNNING")
    api.delete(f"/session/{name}")


def test_sessions_are_listed(api: SignedClient, session: str) -> None:
    names = [item["sessionName"] for item in api.get("/session").json()["items"]]
    assert session in names


def test_rename(api: SignedClient, session: str) -> None:
    api.run(session, "kept = 7")
    renamed = session + "-new"
    assert api.post(f"/session/{session}/rename", {"name": renamed}).status_code == 204
    assert stdout_of(api.run(renamed, "print(kept)")) == "7\n"
    gone = api.get(f"/session/{session}")  # the old name finds nothing: neither live nor in the store
    assert gone.status_code == 404 and gone.json()["title"] == "No such session.", gone.text
    bad = api.post(f"/session/{renamed}/rename", {"name": "x"})
    assert bad.status_code == 400 and "name" in bad.json()["msg"]
    # the official client sends the new name as a query parameter
    assert api.post(f"/session/{renamed}/rename?name={session}").status_code == 204
    assert stdout_of(api.run(session, "print(kept)")) == "7\n"
