"""The streaming execute WebSocket, with a plain websockets client signing the upgrade."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.apiclient import SignedClient

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
    with open_ws(api, session) as ws:
        ws.send(json.dumps({"code": "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.6)",
                            "mode": "query", "options": {}}))
        arrivals = []
        start = time.monotonic()
        for frame in frames(ws):
            for kind, data in frame["console"]:
                arrivals.append((time.monotonic() - start, kind, data))
            last = frame
    assert last["status"] == "finished" and last["exitCode"] == 0
    assert "".join(data for _, _, data in arrivals) == "0\n1\n2\n"
    assert arrivals[0][0] < 1.0  # the first line came long before the run ended (~1.8 s)
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
        ws.send(json.dumps({"code": "import time\nwhile True:\n    time.sleep(0.05)", "mode": "query", "options": {}}))
        time.sleep(0.5)
    for _ in range(50):
        r = api.post(f"/session/{session}", {"mode": "query", "code": "print('free')"})
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.json()["result"]["console"] == [["stdout", "free\n"]]
