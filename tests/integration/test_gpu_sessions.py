"""GPUs as ``cuda.device`` slots, with a fake inventory (regular files standing for the
device nodes): each session sees exactly its own devices, no session sees another's,
and the scheduler keeps a session waiting while every device is taken."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.apiclient import SignedClient, stderr_of, stdout_of
from tests.conftest import RunningServer, _serve
from tests.waiting import wait_for

pytestmark = pytest.mark.sandbox

PROBE = (
    "import os\n"
    "nodes = sorted(n for n in os.listdir('/dev') if n.startswith('nvidia'))\n"
    "print(nodes, [open('/dev/' + n).read().strip() for n in nodes if n[6:].isdigit()],"
    " os.environ.get('CUDA_VISIBLE_DEVICES'))\n"
)


@pytest.fixture
def gpu_server(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    monkeypatch.setenv("BAI_AGENT_FAKE_GPUS", "2")
    yield from _serve(tmp_path / "data")


def _create(api: SignedClient, gpus: int, **extra: object) -> str:
    name = f"g-{uuid.uuid4().hex[:8]}"
    resources = {"cuda.device": gpus} if gpus else {}
    r = api.post("/session", {"image": "python", "name": name, "config": {"resources": resources}, **extra})
    assert r.status_code == 201, r.text
    return name


def _view(api: SignedClient, name: str) -> str:
    result = api.run(name, PROBE)
    assert result["exitCode"] == 0, stderr_of(result)
    return stdout_of(result).strip()


def test_each_session_sees_only_its_own_gpu(gpu_server: RunningServer) -> None:
    api = SignedClient(gpu_server.endpoint, gpu_server.access_key, gpu_server.secret_key)
    agents = api.get("/admin/agents").json()["items"]
    assert agents[0]["capacity"]["cuda.device"] == "2"
    first, second, none = _create(api, 1), _create(api, 1), _create(api, 0)
    assert _view(api, first) == "['nvidia0', 'nvidiactl'] ['GPU-fake-0000'] GPU-fake-0000"
    assert _view(api, second) == "['nvidia1', 'nvidiactl'] ['GPU-fake-0001'] GPU-fake-0001"
    assert _view(api, none) == "[] [] None"

    # both taken: a third waits, and gets the device the first gives back
    third = _create(api, 1, enqueueOnly=True)
    info = api.get(f"/session/{third}").json()
    assert info["status"] == "PENDING"
    # placed, or left waiting, within the create request: no agent means it waits for a device
    assert gpu_server.server.manager.sessions.state.find_by_id(info["sessionId"]).agent_id is None
    api.delete(f"/session/{first}")
    wait_for(lambda: api.get(f"/session/{third}").json()["status"] == "RUNNING", what="the third one RUNNING")
    assert _view(api, third) == "['nvidia0', 'nvidiactl'] ['GPU-fake-0000'] GPU-fake-0000"

    too_many = api.post("/session", {"image": "python", "config": {"resources": {"cuda.device": 3}}})
    assert too_many.status_code == 400 and "cuda.device" in too_many.json()["msg"]
    for name in (second, third, none):
        api.delete(f"/session/{name}")
    api.close()
