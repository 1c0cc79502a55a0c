"""Hostile code in one session, through the API: it is contained, reported, and
the server and a neighbouring session keep working; on both backends (``[local]``,
``[docker]``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.apiclient import SignedClient, following, stderr_of, stdout_of
from tests.capabilities import needs

pytestmark = [pytest.mark.sandbox, pytest.mark.backends]


def make_session(api: SignedClient, **resources: str) -> str:
    name = f"h-{uuid.uuid4().hex[:8]}"
    body: dict = {"image": "python", "name": name}
    if resources:
        body["config"] = {"resources": resources}
    r = api.post("/session", body)
    assert r.status_code == 201, r.text
    return name


@pytest.fixture
def neighbour(api: SignedClient) -> Iterator[str]:
    name = make_session(api)
    api.run(name, "canary = 'alive'")
    yield name
    api.delete(f"/session/{name}")


def assert_neighbour_fine(api: SignedClient, neighbour: str) -> None:
    assert stdout_of(api.run(neighbour, "print(canary)")) == "alive\n"
    assert api.post("/auth/test", {"echo": "ok"}).status_code == 200


def test_memory_bomb_is_killed_and_reported(api: SignedClient, neighbour: str) -> None:
    from tests.integration.test_events import Listener

    name = make_session(api, mem="128m")
    listener = Listener(api, f"/events/session?sessionName={name}", last="session_oom")
    result = api.run(name, "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))\n")
    assert result["exitCode"] != 0
    assert "memory" in stderr_of(result).lower()
    assert result["options"]["stats"]["oom_kills"] >= 1
    listener.thread.join(10)
    (event,) = [data for kind, data in listener.records if kind == "session_oom"]
    assert event["reason"].startswith("oom-killed:") and "128 MiB" in event["reason"]
    info = api.get(f"/session/{name}").json()
    if info["status"] == "RUNNING":  # the REPL was restarted: the session is usable again
        assert stdout_of(api.run(name, "print('back')")) == "back\n"
    else:
        assert info["status"] == "ERROR"
    assert_neighbour_fine(api, neighbour)
    api.delete(f"/session/{name}")


def test_fork_bomb_is_contained(api: SignedClient, neighbour: str) -> None:
    name = make_session(api)
    code = ("import os, time\nn = 0\ntry:\n    while n < 100000:\n        if os.fork() == 0:\n"
            "            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n"
            "    print('stopped after', n, 'forks:', e.strerror)\n")
    result = api.run(name, code)
    assert "stopped after" in stdout_of(result)
    forks = int(stdout_of(result).split()[2])
    assert forks < 2000
    assert_neighbour_fine(api, neighbour)
    stats = api.delete(f"/session/{name}").json()["stats"]
    assert stats["status"] == "terminated"


def test_infinite_loop_does_not_block_others(api: SignedClient, neighbour: str) -> None:
    """The loop is seen to spin (its own output), the neighbour answers meanwhile, and the
    loop still spins after that: a server serialised behind it would never answer."""
    name = make_session(api)
    first = api.post(f"/session/{name}", {"mode": "query", "code": "print('spinning', flush=True)\nwhile True: pass"})
    answers = following(api, name, first.json()["result"], until="spinning")
    assert stdout_of(api.run(neighbour, "print(canary)")) == "alive\n"
    run_id = answers[-1]["runId"]
    still = api.post(f"/session/{name}", {"mode": "continue", "runId": run_id, "code": ""}).json()["result"]
    assert still["status"] == "continued"
    assert api.post(f"/session/{name}/interrupt").status_code == 204
    last = following(api, name, still)[-1]
    assert (last["status"], last["exitCode"]) == ("finished", 1)
    api.delete(f"/session/{name}")


def test_killing_everything_inside_is_reported(api: SignedClient, neighbour: str) -> None:
    name = make_session(api)
    result = api.run(name, "import os, signal\nos.kill(-1, signal.SIGKILL)\n")
    assert result["status"] == "finished"
    assert result["exitCode"] != 0
    status = api.get(f"/session/{name}").json()["status"]
    assert status in ("RUNNING", "ERROR")
    if status == "RUNNING":
        assert stdout_of(api.run(name, "print('still here')")) == "still here\n"
    assert_neighbour_fine(api, neighbour)
    api.delete(f"/session/{name}")


def test_the_runner_cannot_be_killed_from_inside(api: SignedClient, neighbour: str) -> None:
    name = make_session(api)
    result = api.run(name, "import os, signal\nos.kill(1, signal.SIGKILL)\nprint('survived')")
    assert stdout_of(result) == "survived\n"
    assert stdout_of(api.run(name, "print(1 + 1)")) == "2\n"
    assert_neighbour_fine(api, neighbour)
    api.delete(f"/session/{name}")


@pytest.mark.local_only(reason="an image's own root holds /root (empty, mode 0700), where the local sandbox shows none")
def test_no_server_secret_in_the_sandbox(api: SignedClient, bai_server) -> None:
    name = make_session(api)
    code = ("import os\nenv = '\\n'.join(f'{k}={v}' for k, v in os.environ.items())\n"
            "print(env)\nprint(os.path.exists('/root'), os.path.exists('/work'), os.listdir('/home'))")
    out = stdout_of(api.run(name, code))
    assert bai_server.secret_key not in out
    assert bai_server.access_key not in out
    assert str(bai_server.data_dir) not in out
    assert out.strip().endswith("False False ['work']")
    api.delete(f"/session/{name}")


DENIED_SYSCALLS = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
calls = {"ptrace": (101, 0, 0, 0, 0), "mount": (165, 0, 0, 0, 0), "unshare": (272, 0x10000000),
         "setns": (308, 0, 0), "keyctl": (250, 0, 0), "bpf": (321, 0, 0, 0), "perf_event_open": (298, 0, 0, 0, 0, 0)}
for name, args in calls.items():
    ctypes.set_errno(0)
    result = libc.syscall(*args)
    print(name, result, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
"""


@needs("platform", None if os.uname().machine == "x86_64" else "the syscall numbers in this test are x86-64's")
def test_denied_syscalls_fail_with_eperm(api: SignedClient, neighbour: str) -> None:
    name = make_session(api)
    lines = stdout_of(api.run(name, DENIED_SYSCALLS)).splitlines()
    assert len(lines) == 7, lines
    for line in lines:
        _syscall, result, error = line.split()
        assert (result, error) == ("-1", "EPERM"), line
    assert_neighbour_fine(api, neighbour)
    api.delete(f"/session/{name}")
