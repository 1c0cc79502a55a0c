"""Attacks on the host through /home/work, the one place a session writes to.

Disk fill: writing far past the session's scratch cap fails inside the sandbox with
ENOSPC; the host's disk grows by the cap at most; the session recovers once it deletes
the file, and a neighbour keeps working.

Planted links (the Judge0 escape class): the sandbox fills /home/work with symlinks to
host paths (/etc/shadow, /root, the agent's data dir, the database, another session's
file, /), a fifo, a deep tree, and tries hard links. Then the agent does everything it
ever does to a scratch dir (stats, restart, destroy) and the host targets must be as
they were (content, mode, owner) and the agent must not hang on the fifo. Once through
the API on the default scratch kind, and at the agent for each kind; each on both
backends (``[local]``, ``[docker]``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_sandbox import new_session, run, running_agent, sandbox_of, sandbox_unavailable, stdout_of

from bai.agent import mounts, scratch
from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.local.backend import SCRATCH_IMAGES, LocalBackend
from tests.apiclient import SignedClient
from tests.apiclient import stdout_of as api_stdout
from tests.capabilities import needs, require_or_skip

pytestmark = [pytest.mark.sandbox, pytest.mark.backends]
REASON = sandbox_unavailable()
HOSTFILE_REASON = scratch.hostfile_unavailable()
needs_hostfile = needs("sandbox", HOSTFILE_REASON and f"hostfile scratch: {HOSTFILE_REASON}")


def scratch_images(agent: Agent) -> Path:
    """Where ``agent``'s backend keeps its hostfile images (never bound into a sandbox)."""
    assert isinstance(agent.backend, (LocalBackend, DockerBackend))
    root = agent.config.data_dir if isinstance(agent.backend, LocalBackend) else agent.backend.root
    return root / SCRATCH_IMAGES


MiB = 2**20
CAP = 64 * MiB
AGENT_STEP_S = 15.0  # stats, restart and destroy each take milliseconds; a hang takes forever

FILL = """
import os
written, error = 0, None
try:
    with open('/home/work/big', 'wb') as f:
        for _ in range(200):
            written += f.write(b'z' * 2**20)
        f.flush(); os.fsync(f.fileno())
except OSError as e:
    error = e.errno
print(written // 2**20, error)
"""

PLANT = """
import errno, os
targets = {targets!r}
for name, target in targets.items():
    os.symlink(target, '/home/work/' + name)
os.mkdir('/home/work/sub')
for name, target in targets.items():
    os.symlink(target, '/home/work/sub/' + name)
os.mkfifo('/home/work/fifo')
os.mkfifo('/home/work/sub/fifo')
os.symlink('loop-b', '/home/work/loop-a'); os.symlink('loop-a', '/home/work/loop-b')
deep = '/home/work/deep'
for _ in range(100):
    os.mkdir(deep); deep += '/d'
os.symlink('/', deep)
for source in ('/usr/bin/python3', '/etc/passwd', '/opt/bai/bai/runner/__init__.py'):
    try:
        os.link(source, '/home/work/hard-' + os.path.basename(source))
        print('linked', source)
    except OSError as e:
        print('no link', source, errno.errorcode[e.errno])
"""


def fingerprint(path: Path) -> tuple[Any, ...]:
    """What must not change: type, mode, owner, and a file's content. (A directory's
    listing is not compared: /root and the data dirs belong to live processes.)"""
    info = os.lstat(path)
    content = None if stat.S_ISDIR(info.st_mode) else hashlib.sha256(path.read_bytes()).hexdigest()
    return (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, content)


def check_plant_output(out: str) -> None:
    lines = out.splitlines()
    assert len(lines) == 3, out
    # a hard link needs the same mount: no host file's inode is reachable from /home/work
    assert all(line.startswith("no link ") and line.endswith(" EXDEV") for line in lines), out


# -- through the API ---------------------------------------------------------


@pytest.fixture
def small_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    if HOSTFILE_REASON is not None:
        require_or_skip("sandbox", f"hostfile scratch: {HOSTFILE_REASON}")
    monkeypatch.setenv("BAI_AGENT_SCRATCH_SIZE", str(CAP))  # read by the embedded agent's settings


@pytest.fixture
def small_api(small_scratch: None, fresh_server: Any) -> Iterator[tuple[SignedClient, Any]]:
    client = SignedClient(fresh_server.endpoint, fresh_server.access_key, fresh_server.secret_key)
    yield client, fresh_server
    client.close()


def make_session(api: SignedClient) -> tuple[str, str]:
    name = f"s-{uuid.uuid4().hex[:8]}"
    r = api.post("/session", {"image": "python", "name": name})
    assert r.status_code == 201, r.text
    return name, api.get(f"/session/{name}").json()["sessionId"]


def scratch_stat(api: SignedClient, name: str) -> int:
    info = api.get(f"/session/{name}").json()
    return int(info["lastStat"]["io_scratch_size"]["current"])


def test_disk_fill_fails_with_enospc_and_does_not_fill_the_host(small_api: tuple[SignedClient, Any]) -> None:
    api, server = small_api
    neighbour, _ = make_session(api)
    api.run(neighbour, "canary = 'alive'")
    name, session_id = make_session(api)
    disk = server.server.agent.backend.sandboxes[session_id].scratch_disk
    assert disk.kind == "hostfile" and disk.cap == CAP
    written, error = api_stdout(api.run(name, FILL)).split()
    assert error == "28", (written, error)  # ENOSPC, inside the sandbox
    assert int(written) <= 64
    assert os.stat(disk.image).st_blocks * 512 <= CAP  # the host's disk grew by the cap at most
    assert 56 * MiB <= scratch_stat(api, name) <= CAP
    again = api.run(
        name, "import os\nos.unlink('/home/work/big')\nopen('/home/work/x', 'wb').write(b'y' * 2**20)\nprint('ok')"
    )
    assert api_stdout(again) == "ok\n"
    assert api_stdout(api.run(neighbour, "print(canary)")) == "alive\n"
    assert api.delete(f"/session/{name}").status_code == 200
    assert not disk.image.exists() and not disk.path.exists()


def test_planted_links_fifos_and_hard_links_through_the_api(api: SignedClient, bai_server: Any) -> None:
    agent = bai_server.server.agent
    assert isinstance(agent.backend, (LocalBackend, DockerBackend))
    neighbour, neighbour_id = make_session(api)
    api.run(neighbour, "open('/home/work/secret.txt', 'w').write('neighbour data')")
    neighbour_file = agent.backend.sandboxes[neighbour_id].work_dir().path / "secret.txt"
    database = bai_server.data_dir / "bai.sqlite3"
    targets = {
        "shadow": "/etc/shadow",
        "root": "/root",
        "data-dir": str(bai_server.data_dir),
        "agent-dir": str(agent.config.data_dir),
        "images": str(scratch_images(agent)),
        "database": str(database),
        "neighbour": str(neighbour_file),
        "neighbour-dir": str(neighbour_file.parent),
        "slash": "/",
        "etc": "/etc",
    }
    watched = [Path("/etc/shadow"), Path("/root"), neighbour_file, neighbour_file.parent]
    before = {path: fingerprint(path) for path in watched}
    database_before = os.lstat(database)
    name, _ = make_session(api)
    check_plant_output(api_stdout(api.run(name, PLANT.format(targets=targets))))
    started = time.monotonic()
    assert scratch_stat(api, name) < MiB
    assert api.patch(f"/session/{name}").status_code == 204
    assert api_stdout(api.run(name, "import os; print(os.path.islink('/home/work/shadow'))")) == "True\n"
    assert scratch_stat(api, name) < MiB
    assert api.delete(f"/session/{name}").status_code == 200
    assert time.monotonic() - started < 3 * AGENT_STEP_S
    assert {path: fingerprint(path) for path in watched} == before
    after = os.lstat(database)
    assert (after.st_mode, after.st_uid, after.st_gid) == (
        database_before.st_mode,
        database_before.st_uid,
        database_before.st_gid,
    )
    assert agent.config.data_dir.is_dir() and scratch_images(agent).is_dir()
    assert api_stdout(api.run(neighbour, "print(open('/home/work/secret.txt').read())")) == "neighbour data\n"
    assert api.post("/auth/test", {"echo": "ok"}).status_code == 200  # the database still serves
    api.delete(f"/session/{neighbour}")


# -- at the agent, for each kind of scratch disk ----------------------------------------


@pytest.fixture(params=[pytest.param("hostfile", marks=needs_hostfile), "memory", "hostdir"])
async def kind_agent(request: pytest.FixtureRequest, backend: str) -> AsyncIterator[Agent]:
    if backend == "local" and REASON is not None:  # the docker param has the docker probe's mark
        require_or_skip("sandbox", REASON)
    async with running_agent(backend=backend, scratch_type=request.param, scratch_size=CAP, pool_size=0) as started:
        yield started


async def test_planted_links_survive_every_agent_step_for_each_kind(kind_agent: Agent, tmp_path: Path) -> None:
    agent = kind_agent
    victim_dir = Path(f"/tmp/bai-victim-{uuid.uuid4().hex}")
    victim_dir.mkdir(mode=0o700)
    victim = victim_dir / "secret.txt"
    victim.write_text("precious")
    victim.chmod(0o600)
    try:
        await _plant_and_touch(agent, victim)
    finally:
        victim.unlink()
        victim_dir.rmdir()


async def _plant_and_touch(agent: Agent, victim: Path) -> None:
    neighbour = await new_session(agent)
    await run(agent, neighbour, "open('/home/work/secret.txt', 'w').write('neighbour data')")
    neighbour_file = sandbox_of(agent, neighbour).work_dir().path / "secret.txt"
    targets = {
        "victim": str(victim),
        "victim-dir": str(victim.parent),
        "shadow": "/etc/shadow",
        "root": "/root",
        "agent-dir": str(agent.config.data_dir),
        "images": str(scratch_images(agent)),
        "neighbour": str(neighbour_file),
        "neighbour-dir": str(neighbour_file.parent),
        "slash": "/",
    }
    watched = [victim, victim.parent, Path("/etc/shadow"), Path("/root"), neighbour_file, neighbour_file.parent]
    before = {path: fingerprint(path) for path in watched}
    session = await new_session(agent)
    disk = sandbox_of(agent, session).scratch_disk
    check_plant_output(stdout_of(await run(agent, session, PLANT.format(targets=targets))))
    stats = await asyncio.wait_for(agent.session_stats(session), AGENT_STEP_S)
    assert stats.io_scratch_size < MiB  # links counted as links, not as their targets
    await asyncio.wait_for(agent.restart_session(session), AGENT_STEP_S)
    assert stdout_of(await run(agent, session, "import os; print(os.path.islink('victim'))")) == "True\n"
    final = await asyncio.wait_for(agent.destroy_session(session), AGENT_STEP_S)
    assert final.io_scratch_size < MiB
    assert {path: fingerprint(path) for path in watched} == before
    assert not disk.path.exists() and not mounts.is_mount_point(disk.path)
    assert disk.image is None or not disk.image.exists()
    out = stdout_of(await run(agent, neighbour, "print(open('/home/work/secret.txt').read())"))
    assert out == "neighbour data\n"
