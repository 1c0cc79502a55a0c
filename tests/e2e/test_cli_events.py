"""``bai events``: lifecycle events through the real CLI entry point."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import uuid

import pytest

from tests.apiclient import SignedClient
from tests.waiting import wait_for

pytestmark = pytest.mark.sandbox


def test_events_of_one_session_in_order(bai_server) -> None:  # type: ignore[no-untyped-def]
    name = f"cli-ev-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen([sys.executable, "-m", "bai.client.cli.main", "events", name, "--json"],
                            env=bai_server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    seen: list[dict] = []
    bus = bai_server.server.manager.events
    listeners = bus.subscriber_count
    try:
        with SignedClient(bai_server.endpoint, bai_server.access_key, bai_server.secret_key) as api:
            wait_for(lambda: bus.subscriber_count > listeners or proc.poll() is not None, what="the CLI's stream")
            assert proc.poll() is None, proc.stderr
            assert api.post("/session", {"image": "python", "name": name}).status_code == 201
            api.delete(f"/session/{name}")
            for event in [f"session_{s}" for s in ("terminated", "success")]:
                while True:
                    record = json.loads(lines.get(timeout=20))
                    seen.append(record)
                    if record["event"] == event:
                        break
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    names = [record["event"] for record in seen]
    assert names == ["session_enqueued", "session_scheduled", "session_preparing", "session_started",
                     "session_terminating", "session_terminated", "session_success"]
    assert all(record["sessionName"] == name for record in seen)
    assert seen[-2]["reason"] == "user-requested"
