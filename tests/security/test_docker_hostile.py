"""The hostile-code tests of ``test_hostile_sessions`` (memory bomb, fork bomb, an
infinite loop, kill -1, killing PID 1, denied syscalls), ``test_escapes`` (network,
the server's state and secrets, other sessions' files, setuid binaries, /proc and /sys,
TIOCSTI, signals) and ``test_output_flood``, run again through the API of an embedded
server on the docker backend (``docker_server``, the run's, given here as
``bai_server``). Skipped with the reason where Docker or the image is missing."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from conftest import RunningServer
from docker_sandbox import docker_unavailable

from tests.apiclient import SignedClient
from tests.capabilities import needs

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]

LOCAL_ONLY = {
    # the image's own root holds /root (empty, mode 0700), where the local sandbox shows none of the host's
    "test_no_server_secret_in_the_sandbox",
    # these two have docker variants below: /sys/fs/cgroup is an empty masked dir, not absent; /usr is
    # part of the read-only root, not a nosuid mount of its own
    "test_the_servers_state_is_out_of_reach",
    "test_setuid_binaries_give_nothing",
}


SHARED: dict[str, object] = {}


def _load(name: str) -> None:
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_docker_hostile_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    SHARED.update(vars(module))
    for attr, value in vars(module).items():
        if (attr.startswith("test_") and callable(value) and attr not in LOCAL_ONLY) or attr in FIXTURES:
            globals()[attr] = value


FIXTURES = {"neighbour", "attacker", "session"}
for _name in ("test_hostile_sessions", "test_escapes", "test_output_flood"):
    _load(_name)


@pytest.fixture
def bai_server(docker_server: RunningServer) -> RunningServer:
    """The run's docker server (tests/conftest.py); tests isolate by session names."""
    assert docker_server.server.agent.backend.name == "docker"
    return docker_server


def test_the_servers_state_and_the_hosts_are_out_of_reach(
    api: SignedClient, bai_server: RunningServer, attacker: str, neighbour: str
) -> None:
    data = bai_server.data_dir
    paths = [str(data / "bai.sqlite3"), str(data / "client.env"), str(data), str(data / "agent"),
             "/var/lib/bai", "/root", "/root/.bash_history", "/work", "/etc/shadow", "/etc/ssh",
             "/proc/1/environ", f"/proc/{os.getpid()}/environ", "/sys/fs/cgroup", "/home", "/proc/keys"]  # fmt: skip
    code = f"PATHS = {json.dumps(json.dumps(paths))}\n" + str(SHARED["PROBE_PATHS"])
    found = SHARED["run_json"](api, attacker, code)  # type: ignore[operator]
    assert isinstance(found, dict)
    expected = {"/proc/1/environ": "PermissionError", "/home": "LISTED:work", "/sys/fs/cgroup": "LISTED:"}
    for path, outcome in found.items():
        if path in expected:
            assert outcome == expected[path], (path, outcome)
        elif path == "/proc/keys":
            assert outcome == "READ" or outcome.endswith("Error"), outcome  # masked: /dev/null
        elif path == f"/proc/{os.getpid()}/environ" and os.getpid() < 100:
            continue
        else:
            assert outcome in ("FileNotFoundError", "PermissionError"), (path, outcome)
    SHARED["assert_neighbour_fine"](api, neighbour)  # type: ignore[operator]


def test_setuid_binaries_give_nothing_in_a_container(api: SignedClient, attacker: str, neighbour: str) -> None:
    report = SHARED["run_json"](api, attacker, SHARED["SETUID"])  # type: ignore[operator]
    assert isinstance(report, dict)
    assert report["nnp"] == "1" and int(report["capeff"], 16) == 0 and report["euid"] >= 1_000_000  # its own uid
    for program, outcome in report["tries"].items():
        if outcome is not None:
            returncode, out = outcome
            assert returncode != 0 or out != "0", (program, outcome)
    SHARED["assert_neighbour_fine"](api, neighbour)  # type: ignore[operator]
