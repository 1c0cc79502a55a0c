"""The streaming execute WebSocket, with a plain websockets client signing the upgrade."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.apiclient import SignedClient, following, stdout_of, upload
from tests.waiting import wait_for

pytestmark = pytest.mark.sandbox


@pytest.fixture
def session(api: SignedClient) -> Iterator[str]:
    name = f"ws-{uuid.uuid4().hex[:8]}"
    assert api.post("/session", {"image": "python", "name": name}).status_code == 201
    yield name
    api.delete(f"/session/{name}")


def open_ws(api: SignedClient, session: str) -> ClientConnection:
    path = f"/stream/session/{session}/execute"
    headers = api.headers("GET", path, b"", None)
    return connect("ws" + api.endpoint[4:] + path, additional_headers=headers, open_timeout=10)


def frames(ws: ClientConnection) -> Iterator[dict]:
    while True:
        frame = json.loads(ws.recv(timeout=20))
        yield frame
        if frame["status"] in ("finished", "exec-timeout", "error"):
            return


def test_output_is_streamed_while_the_run_goes_on(api: SignedClient, session: str) -> None:
    """The run cannot end before the test uploads ``go``, which it does only once the
    first line has come: so that line was streamed while the run went on."""
    code = "import os, time\nprint(0, flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\nprint(1)\n"
    with open_ws(api, session) as ws:
        ws.send(json.dumps({"code": code, "mode": "query", "options": {}}))
        stream = frames(ws)
        seen = ""
        while "0\n" not in seen:
            frame = next(stream)
            assert frame["status"] == "continued", frame
            seen += "".join(data for _, data in frame["console"])
        assert upload(api, session, [("go", b"")]).status_code == 204
        for frame in stream:
            seen += "".join(data for _, data in frame["console"])
            last = frame
    assert last["status"] == "finished" and last["exitCode"] == 0
    assert seen == "0\n1\n"
    assert "runId" not in last


def test_input_over_the_websocket(api: SignedClient, session: str) -> None:
    with open_ws(api, session) as ws:
        ws.send(json.dumps({"code": "print('got', input('> '))", "mode": "query", "options": {}}))
        out = ""
        for frame in frames(ws):
            out += "".join(d for k, d in frame["console"] if k == "stdout")
            if frame["status"] == "waiting-input":
                assert frame["options"] == {"is_password": False}
                ws.send("42")
    assert out == "> got 42\n"


def test_errors_come_as_error_frames(api: SignedClient, session: str) -> None:
    with open_ws(api, session) as ws:
        ws.send("{not json")
        frame = json.loads(ws.recv(timeout=10))
    assert frame["status"] == "error" and "JSON" in frame["msg"]


def test_unknown_session_refuses_the_upgrade(api: SignedClient) -> None:
    with pytest.raises(Exception, match="404"):
        open_ws(api, "no-such-session")


def test_disconnect_interrupts_the_run(api: SignedClient, session: str) -> None:
    with open_ws(api, session) as ws:
        code = "import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.05)"
        ws.send(json.dumps({"code": code, "mode": "query", "options": {}}))
        seen = ""
        for frame in frames(ws):  # the run is going when the socket closes
            seen += "".join(data for _, data in frame["console"])
            if "started" in seen:
                break
        assert "started" in seen
    # the interrupt lands soon after the close: until then the session is busy (409)
    r = wait_for(lambda: (r := api.post(f"/session/{session}", {"mode": "query", "code": "print('free')"}))
                 .status_code == 200 and r, what="the session to be free: the run interrupted")
    assert "".join(stdout_of(answer) for answer in following(api, session, r.json()["result"])) == "free\n"
