"""What a sandbox can and cannot see or reach (real bwrap or containers, cgroups, runner).

On both backends (``[local]``, ``[docker]``). The tests that look at the local sandbox's
own parts (the host's trimmed root, the session's host uid, bwrap's processes) are
``local_only``, each with a ``docker_only`` variant at the end that checks the same on
the container's parts; the environment's variant allows Docker's ``HOSTNAME``."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agent_sandbox import (
    new_session,
    run,
    running_agent,
    sandbox_of,
    sandbox_unavailable,
    stderr_of,
    stdout_of,
)

from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.local.backend import LocalBackend
from bai.common.errors import InvalidRequest
from tests.capabilities import needs

REASON = sandbox_unavailable()
pytestmark = [pytest.mark.sandbox, needs("sandbox", REASON), pytest.mark.backends]


@pytest.fixture
async def agent(backend: str) -> AsyncIterator[Agent]:
    """A started agent on the test's backend (a docker one with no pool: each pooled
    container is a second start)."""
    async with running_agent(backend=backend, **({"pool_size": 0} if backend == "docker" else {})) as started:
        yield started


async def inside(agent: Agent, session_id: str, code: str) -> str:
    result = await run(agent, session_id, code)
    assert result.exit_code == 0, stderr_of(result)
    return stdout_of(result)


async def test_no_network(agent: Agent) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        session = await new_session(agent)
        out = await inside(
            agent,
            session,
            "import socket\n"
            "s = socket.socket()\n"
            "s.settimeout(2)\n"
            f"try:\n    s.connect(('127.0.0.1', {port})); print('connected')\n"
            "except OSError as e:\n    print('refused', e.errno)\n"
            "print(sorted(n for _, n in socket.if_nameindex()))\n",
        )
    finally:
        listener.close()
    lines = out.splitlines()
    assert lines[0].startswith("refused")
    assert lines[1] == "['lo']"


#: files the sandbox's code tries to create outside /home/work: every one must fail
WRITE_PROBES = ["/usr/x", "/etc/x", "/x", "/opt/x", "/opt/bai/bai/runner/x", "/bin/x", "/proc/x", "/home/x", "/dev/x"]


async def isolation_report(agent: Agent, session: str, probes: list[str], writes: list[str]) -> dict[str, Any]:
    """From inside the sandbox: which of ``probes`` exist (``seen``), what creating each
    of ``writes`` gave (``written`` or the errno), /home's entries and the root's."""
    code = (
        "import os, json\n"
        f"probes = {json.dumps(probes)}\n"
        "seen = {p: os.path.lexists(p) for p in probes}\n"
        "writes = {}\n"
        f"for p in {json.dumps(writes)}:\n"
        "    try:\n        open(p, 'w').close(); writes[p] = 'written'\n"
        "    except OSError as e:\n        writes[p] = e.errno\n"
        "print(json.dumps({'seen': seen, 'writes': writes, 'home': os.listdir('/home'),"
        " 'top': sorted(os.listdir('/'))}))\n"
    )
    report: dict[str, Any] = json.loads(await inside(agent, session, code))
    return report


@pytest.mark.local_only(reason="the host's trimmed root; a container shows its image's")
async def test_host_file_system_is_read_only_and_trimmed(agent: Agent) -> None:
    session = await new_session(agent)
    data_dir = agent.config.data_dir
    assert isinstance(agent.backend, LocalBackend)
    probes = {
        "/root": "exists",
        "/work": "exists",
        "/var": "exists",
        str(data_dir): "exists",
        str(agent.backend.scratch_root): "exists",
        "/etc/shadow": "exists",
        "/etc/ssl/private": "exists",
    }
    report = await isolation_report(agent, session, list(probes), WRITE_PROBES)
    assert not any(report["seen"].values()), report["seen"]
    assert all(value != "written" for value in report["writes"].values()), report["writes"]
    assert report["home"] == ["work"]
    assert set(report["top"]) <= {
        "bin",
        "dev",
        "etc",
        "home",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "opt",
        "proc",
        "sbin",
        "tmp",
        "usr",
    }


@pytest.mark.local_only(reason="the session's own host uid (a container runs as the image's)")
async def test_only_home_work_is_written_to_the_host(agent: Agent) -> None:
    session = await new_session(agent)
    out = await inside(
        agent, session, "open('/home/work/out.txt', 'w').write('hello')\nimport os\nprint(os.getcwd())\n"
    )
    assert out == "/home/work\n"
    sandbox = sandbox_of(agent, session)
    host_file = sandbox.scratch / "out.txt"
    assert host_file.read_text() == "hello"
    assert sandbox.uid is not None
    assert host_file.stat().st_uid == sandbox.uid
    assert sandbox.scratch.stat().st_uid == sandbox.uid
    assert sandbox.scratch.stat().st_mode & 0o777 == 0o700


async def test_tmp_is_private_per_session(agent: Agent) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    first = await new_session(agent)
    second = await new_session(agent)
    await inside(agent, first, f"open('/tmp/{marker}', 'w').write('x')")
    assert await inside(agent, first, f"import os; print(os.path.exists('/tmp/{marker}'))") == "True\n"
    assert await inside(agent, second, f"import os; print(os.path.exists('/tmp/{marker}'))") == "False\n"
    assert not Path("/tmp", marker).exists()


@pytest.mark.local_only(reason="the session's own host uid, bwrap's processes")
async def test_identity_inside_and_on_the_host(agent: Agent) -> None:
    session = await new_session(agent)
    out = await inside(
        agent,
        session,
        "import os, pwd\nprint(os.getuid(), os.getgid(), os.getpid(), pwd.getpwuid(os.getuid()).pw_name)\n",
    )
    uid, gid, pid, name = out.split()
    assert (uid, gid, name) == ("1000", "1000", "work")
    assert int(pid) < 50  # its own PID namespace
    sandbox = sandbox_of(agent, session)
    assert sandbox.uid is not None and sandbox.uid >= agent.config.sandbox_uid_base
    assert sandbox.cgroup is not None and sandbox.host.cgroups is not None
    pids = sandbox.host.cgroups.pids(sandbox.cgroup)
    assert sandbox.child_pid in pids
    assert len(pids) >= 3  # bwrap's monitor, the runner, the REPL
    for pid_ in pids:
        status = Path(f"/proc/{pid_}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [str(sandbox.uid)] * 4, (pid_, uids)


@pytest.mark.local_only(reason="bwrap's child pid")
async def test_runner_holds_no_host_file(agent: Agent) -> None:
    session = await new_session(agent)
    sandbox = sandbox_of(agent, session)
    assert sandbox.child_pid is not None
    for pid in (sandbox.child_pid, sandbox.child.pid if sandbox.child else 0):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            assert target.startswith(("socket:", "pipe:", "anon_inode:", "/dev/null")), (pid, fd, target)


@pytest.mark.local_only(reason="Docker sets HOSTNAME (the container's, \"sandbox\")")
async def test_environment_holds_nothing_of_the_agent(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAI_TEST_SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    session = await new_session(agent, environ={"GREETING": "hi there", "PYTHONHASHSEED": "0"})
    env = json.loads(await inside(agent, session, "import os, json; print(json.dumps(dict(os.environ)))"))
    assert "hunter2" not in json.dumps(env) and "also-secret" not in json.dumps(env)
    assert env["GREETING"] == "hi there"
    assert env["HOME"] == "/home/work" and env["LANG"] == "C.UTF-8" and env["PYTHONUNBUFFERED"] == "1"
    allowed = {"PATH", "HOME", "LANG", "TERM", "PYTHONUNBUFFERED", "GREETING", "PYTHONHASHSEED", "PWD"}
    # the runner may add its own few (e.g. for the REPL); none of the agent's
    assert not {k for k in env if k not in allowed and not k.startswith(("PYTHON", "BAI_RUNNER", "MPL"))}


async def test_environ_names_must_be_identifiers(agent: Agent) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await new_session(agent, environ={"BAD-NAME": "x"})
    assert caught.value.field == "environ"
    assert agent.sessions == {}


async def test_cannot_make_user_namespaces_or_gain_privileges(agent: Agent) -> None:
    session = await new_session(agent)
    result = await run(
        agent,
        session,
        "import ctypes, os\n"
        "print([l for l in open('/proc/self/status') if l.startswith(('NoNewPrivs', 'CapEff'))])\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n",  # CLONE_NEWUSER
    )
    out = stdout_of(result)
    assert "CapEff:\\t0000000000000000" in out
    assert "NoNewPrivs:\\t1" in out
    assert "unshare -1" in out


# -- the docker variants of the local_only tests -------------------------------


@pytest.mark.docker_only(reason="the local test's check, on the container's parts")
async def test_host_file_system_is_out_of_reach_and_the_root_read_only_in_a_container(agent: Agent) -> None:
    """The image's own root (its /etc, /root, /var) is what the container sees: the probes
    are the host's paths the local test probes that an image does not have."""
    session = await new_session(agent)
    assert isinstance(agent.backend, DockerBackend)
    probes = [
        "/work", str(agent.config.data_dir), str(agent.backend.root), str(agent.backend.socket_root),
        "/var/lib/docker", "/run/docker.sock", "/var/run/docker.sock", "/etc/ssl/private/ssl-cert-snakeoil.key",
    ]  # fmt: skip
    report = await isolation_report(agent, session, probes, [*WRITE_PROBES, "/root/x", "/var/x", "/run/bai/x"])
    assert not any(report["seen"].values()), report["seen"]
    assert all(value != "written" for value in report["writes"].values()), report["writes"]
    assert report["home"] == ["work"]


@pytest.mark.docker_only(reason="the local test's check, on the container's parts")
async def test_only_home_work_is_written_to_the_host_in_a_container(agent: Agent) -> None:
    session = await new_session(agent)
    out = await inside(
        agent, session, "open('/home/work/out.txt', 'w').write('hello')\nimport os\nprint(os.getcwd())\n"
    )
    assert out == "/home/work\n"
    sandbox = sandbox_of(agent, session)
    scratch = sandbox.scratch_disk.path
    host_file = scratch / "out.txt"
    assert host_file.read_text() == "hello"
    uid = sandbox.container_spec.uid  # the session's own host uid (docs/docker-backend.md)
    assert uid is not None and uid != sandbox.container_spec.image.uid
    assert host_file.stat().st_uid == uid and scratch.stat().st_uid == uid
    assert scratch.stat().st_mode & 0o777 == 0o700


@pytest.mark.docker_only(reason="the local test's check, on the container's parts")
async def test_identity_inside_and_on_the_host_in_a_container(agent: Agent) -> None:
    session = await new_session(agent)
    out = await inside(
        agent,
        session,
        "import os, pwd\nprint(os.getuid(), os.getgid(), os.getpid(), pwd.getpwuid(os.getuid()).pw_name)\n",
    )
    uid, gid, pid, name = out.split()
    sandbox = sandbox_of(agent, session)
    assert (uid, gid, name) == (str(sandbox.container_spec.uid), uid, "work")  # its own uid, the image's name
    assert int(uid) >= agent.config.sandbox_uid_base
    assert int(pid) < 50  # its own PID namespace
    assert sandbox.cgroup is not None and sandbox.host.cgroups is not None
    pids = sandbox.host.cgroups.pids(sandbox.cgroup)
    assert sandbox.runner_pid in pids
    assert len(pids) >= 2  # the runner, the REPL
    for pid_ in pids:
        status = Path(f"/proc/{pid_}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [uid] * 4, (pid_, uids)  # no user namespace: the same uid on the host


@pytest.mark.docker_only(reason="the local test's check, on the container's parts")
async def test_runner_holds_no_host_file_in_a_container(agent: Agent) -> None:
    session = await new_session(agent)
    sandbox = sandbox_of(agent, session)
    assert sandbox.runner_pid is not None
    seen: dict[str, Any] = {}
    for fd in os.listdir(f"/proc/{sandbox.runner_pid}/fd"):
        target = os.readlink(f"/proc/{sandbox.runner_pid}/fd/{fd}")
        seen[fd] = target
        assert target.startswith(("socket:", "pipe:", "anon_inode:", "/dev/null")), (fd, target)
    assert any(target.startswith("socket:") for target in seen.values()), seen  # the agent's


@pytest.mark.docker_only(reason="the local test's check, on the container's parts")
async def test_environment_holds_nothing_of_the_agent_in_a_container(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the local test, but Docker puts HOSTNAME (the container's hostname) in every
    container's environment; it cannot be unset, and it says nothing of the agent. USER and
    LOGNAME name the image's user, whose uid is the session's own (a number with no name
    on the host)."""
    monkeypatch.setenv("BAI_TEST_SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    session = await new_session(agent, environ={"GREETING": "hi there", "PYTHONHASHSEED": "0"})
    env = json.loads(await inside(agent, session, "import os, json; print(json.dumps(dict(os.environ)))"))
    assert "hunter2" not in json.dumps(env) and "also-secret" not in json.dumps(env)
    assert env["GREETING"] == "hi there" and env["HOSTNAME"] == "sandbox"
    assert env["HOME"] == "/home/work" and env["LANG"] == "C.UTF-8" and env["PYTHONUNBUFFERED"] == "1"
    assert env["USER"] == env["LOGNAME"] == "work"
    allowed = {"PATH", "HOME", "LANG", "TERM", "PYTHONUNBUFFERED", "GREETING", "PYTHONHASHSEED", "PWD", "HOSTNAME",
               "USER", "LOGNAME"}  # fmt: skip
    assert not {k for k in env if k not in allowed and not k.startswith(("PYTHON", "BAI_RUNNER", "MPL"))}
