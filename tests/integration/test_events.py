"""Session lifecycle events over server-sent events (API.md section 7)."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from tests.apiclient import SignedClient

pytestmark = pytest.mark.sandbox


class Listener:
    """Reads an SSE stream in a thread, collecting (event, data) records."""

    def __init__(self, api: SignedClient, path: str, last: str = "kernel_success") -> None:
        self.records: list[tuple[str, dict]] = []
        self.last = last
        self.connected = threading.Event()
        self.client = SignedClient(api.endpoint, api.access_key, api.secret_key)
        self.path = path
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.connected.wait(10)

    def _read(self) -> None:
        headers = self.client.headers("GET", self.path, b"", None)
        event = ""
        with self.client.http.stream("GET", self.path, headers=headers, timeout=30) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    self.records.append((event, json.loads(line[6:])))
                    if event == self.last:
                        return

    def names(self) -> list[str]:
        return [name for name, _ in self.records if name.startswith("session_")]


def test_a_sessions_life_in_order(api: SignedClient) -> None:
    name = f"ev-{uuid.uuid4().hex[:8]}"
    listener = Listener(api, f"/events/session?sessionName={name}")
    other = f"ev-{uuid.uuid4().hex[:8]}"
    assert api.post("/session", {"image": "python", "name": other}).status_code == 201  # filtered out
    assert api.post("/session", {"image": "python", "name": name}).status_code == 201
    api.delete(f"/session/{name}")
    api.delete(f"/session/{other}")
    listener.thread.join(10)
    listener.client.close()
    assert listener.names() == ["session_enqueued", "session_scheduled", "session_preparing", "session_started",
                                "session_terminating", "session_terminated", "session_success"]
    terminated = dict(listener.records)["session_terminated"]
    assert terminated["reason"] == "user-requested"
    assert terminated["sessionName"] == name
    assert terminated["ownerAccessKey"] == api.access_key
    assert dict(listener.records)["kernel_terminated"] == terminated  # the v4 twin


def test_scope_picks_the_event_family(api: SignedClient) -> None:
    name = f"ev-{uuid.uuid4().hex[:8]}"
    listener = Listener(api, f"/events/session?sessionName={name}&scope=kernel", last="kernel_terminated")
    api.post("/session", {"image": "python", "name": name})
    api.delete(f"/session/{name}")
    listener.thread.join(10)
    listener.client.close()
    names = [n for n, _ in listener.records]
    assert names and all(n.startswith("kernel_") for n in names)
    assert names[-1] == "kernel_terminated"


def test_other_keypairs_cannot_be_watched(api: SignedClient) -> None:
    created = api.post("/admin/keypairs", {"user_id": "watcher"}).json()
    with SignedClient(api.endpoint, created["access_key"], created["secret_key"]) as user:
        r = user.get(f"/events/session?ownerAccessKey={api.access_key}")
        assert r.status_code == 403
        r = user.get("/events/session?scope=everything")
        assert r.status_code == 400 and "scope" in r.json()["msg"]
