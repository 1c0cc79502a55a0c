"""Scratch disks of real local sandboxes, at the agent: the cap on /home/work
(ENOSPC inside, no host fill), its life across restart and destroy, per-session
sizes against the warm pool, bad sizes, the agent's info, and a crashed agent's
leftovers. Each capped kind (hostfile, memory) where the host allows it.

On both backends (``[local]``, ``[docker]``). A crashed agent's leftovers are checked at
each backend's own layout (a ``docker_only`` variant at the end); the local backend's
fallback share root has no docker counterpart."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_sandbox import make_config, new_session, run, running_agent, sandbox_of, sandbox_unavailable, stdout_of

from bai.agent import mounts, scratch
from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.local import backend as local
from bai.agent.backends.local.backend import SCRATCH_IMAGES, LocalBackend
from bai.agent.scratch import ScratchDisks
from bai.common.errors import InvalidRequest
from tests.capabilities import needs
from tests.waiting import until

REASON = sandbox_unavailable()
HOSTFILE_REASON = scratch.hostfile_unavailable()
pytestmark = [pytest.mark.sandbox, needs("sandbox", REASON), pytest.mark.backends]
needs_hostfile = needs("sandbox", HOSTFILE_REASON and f"hostfile scratch: {HOSTFILE_REASON}")
MiB = 2**20
CAP = 64 * MiB

FILL = """
import errno, os
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


@pytest.fixture(params=[pytest.param("hostfile", marks=needs_hostfile), "memory"])
async def agent(request: pytest.FixtureRequest, backend: str) -> AsyncIterator[Agent]:
    async with running_agent(backend=backend, scratch_type=request.param, scratch_size=CAP, pool_size=0) as started:
        yield started


def loop_backing_files() -> set[str]:
    found = set()
    for entry in Path("/sys/block").glob("loop*"):
        backing = entry / "loop" / "backing_file"
        if backing.exists():
            found.add(backing.read_text().strip())
    return found


async def test_writing_past_the_cap_fails_with_enospc_and_the_session_recovers(agent: Agent) -> None:
    neighbour = await new_session(agent)
    session = await new_session(agent)
    disk = sandbox_of(agent, session).scratch_disk
    assert disk.cap == CAP and disk.kind == agent.config.scratch_type
    written, error = stdout_of(await run(agent, session, FILL)).split()
    assert error == "28"  # ENOSPC
    assert 56 <= int(written) <= 64
    stats = await agent.session_stats(session)
    assert 56 * MiB <= stats.io_scratch_size <= CAP
    if disk.image is not None:
        assert os.stat(disk.image).st_blocks * 512 <= CAP  # the host's disk grew by the cap at most
    result = await run(
        agent,
        session,
        "import os\nos.unlink('/home/work/big')\nopen('/home/work/x', 'w').write('y' * 10**6)\nprint('ok')",
    )
    assert stdout_of(result) == "ok\n"
    assert (await agent.session_stats(session)).io_scratch_size < 2 * MiB
    assert (
        stdout_of(await run(agent, neighbour, "open('/home/work/n', 'w').write('n' * 10**6); print('fine')"))
        == "fine\n"
    )


async def test_restart_keeps_the_disk_and_destroy_removes_it(agent: Agent) -> None:
    session = await new_session(agent, scratch_bytes=32 * MiB)
    sandbox = sandbox_of(agent, session)
    disk = sandbox.scratch_disk
    assert disk.cap == 32 * MiB
    await run(agent, session, "open('/home/work/kept.txt', 'w').write('file')")
    await agent.restart_session(session)
    assert sandbox.scratch_disk is disk and mounts.is_mount_point(disk.path)
    out = stdout_of(
        await run(
            agent,
            session,
            "import os\ns = os.statvfs('.')\nprint(open('kept.txt').read(), s.f_blocks * s.f_frsize <= 32 * 2**20)",
        )
    )
    assert out == "file True\n"
    await agent.destroy_session(session)
    assert not mounts.is_mount_point(disk.path)
    assert not disk.path.exists()
    if disk.image is not None:
        assert not disk.image.exists()
        assert str(disk.image) not in loop_backing_files()


async def test_the_agent_says_what_backs_home_work(agent: Agent) -> None:
    assert agent.info().scratch_type == agent.config.scratch_type


async def test_bad_scratch_sizes_are_refused_by_field(agent: Agent) -> None:
    for size in (-1, 0, scratch.MIN_SCRATCH_BYTES - 1, scratch.MAX_SCRATCH_BYTES + 1):
        with pytest.raises(InvalidRequest) as caught:
            await new_session(agent, scratch_bytes=size)
        assert caught.value.field == "scratch_bytes"
    assert agent.sessions == {}


@needs_hostfile
async def test_a_session_of_another_size_starts_cold_and_the_pool_keeps_its_sandbox(backend: str) -> None:
    async with running_agent(backend=backend, scratch_type="hostfile", scratch_size=CAP, pool_size=1) as agent:
        pool = agent.pool
        assert pool is not None
        await until(lambda: pool.counts()["python"] == 1, what="the pooled sandbox")
        assert isinstance(agent.backend, (LocalBackend, DockerBackend))
        [pooled_name] = agent.backend.sandboxes
        other = await new_session(agent, scratch_bytes=32 * MiB)
        sandbox = sandbox_of(agent, other)
        assert sandbox.name == other and sandbox.scratch_disk.cap == 32 * MiB  # cold: its own disk
        assert agent.pool.counts()["python"] == 1
        assert (
            stdout_of(
                await run(agent, other, "import os; s = os.statvfs('.'); print(s.f_blocks * s.f_frsize <= 32 * 2**20)")
            )
            == "True\n"
        )
        same = await new_session(agent, scratch_bytes=CAP)
        assert sandbox_of(agent, same).name == pooled_name  # the default size: claimed from the pool
        assert sandbox_of(agent, same).scratch_disk.cap == CAP


async def test_hostdir_is_a_plain_uncapped_dir(backend: str) -> None:
    async with running_agent(backend=backend, scratch_type="hostdir", pool_size=0) as agent:
        session = await new_session(agent, scratch_bytes=32 * MiB)  # accepted; no cap to give
        disk = sandbox_of(agent, session).scratch_disk
        assert (disk.kind, disk.cap, disk.image) == ("hostdir", None, None)
        assert not mounts.is_mount_point(disk.path)
        await run(agent, session, "open('/home/work/f', 'w').write('x' * 5000)")
        assert (await agent.session_stats(session)).io_scratch_size == 5000
        assert agent.info().scratch_type == "hostdir"


@needs_hostfile
async def test_a_restarted_agent_releases_the_disks_a_killed_one_left(backend: str) -> None:
    """The disks a killed agent left, at its backend's layout (docker: ``docker/scratch``)."""
    config = make_config(scratch_type="hostfile", backend=backend, **({"pool_size": 0} if backend == "docker" else {}))
    if backend == "docker":
        root, images, owner = (
            config.data_dir / "docker" / "scratch", config.data_dir / "docker" / "scratch-images", 1000,
        )
        root.mkdir(parents=True)
    else:
        root, images, owner = config.data_dir / "sandbox" / "scratch", config.data_dir / SCRATCH_IMAGES, 0
        root.mkdir(parents=True)
        root.chmod(0o711)
        (config.data_dir / "sandbox").chmod(0o711)
    makers = [ScratchDisks("hostfile", root, images, CAP), ScratchDisks("memory", root, images, CAP)]
    makers[0].prepare()
    disks = [maker.create(uuid.uuid4().hex, None, owner, owner) for maker in makers]
    (disks[0].path / "data").write_bytes(b"d" * 100_000)
    agent = Agent(config)
    try:
        await agent.start()
        assert mounts.mounts_under(root) == []
        assert not any(d.path.exists() for d in disks)
        assert list(images.iterdir()) == []
        assert str(disks[0].image) not in loop_backing_files()
        session = await new_session(agent)
        assert stdout_of(await run(agent, session, "print('works')")) == "works\n"
    finally:
        await agent.stop()
        mounts.unmount_under(config.data_dir)
        shutil.rmtree(config.data_dir, ignore_errors=True)


@needs_hostfile
async def test_an_orphaned_share_roots_scratch_mounts_are_released() -> None:
    local.FALLBACK_SHARE_BASE.mkdir(parents=True, exist_ok=True)
    orphan = local.FALLBACK_SHARE_BASE / f"test-orphan-{uuid.uuid4().hex[:8]}"
    (orphan / "scratch").mkdir(parents=True)
    (orphan / "agent.lock").touch()
    left = ScratchDisks("memory", orphan / "scratch", orphan / "images", CAP).create("dead-session", None, 0, 0)
    (left.path / "f").write_text("x")
    parent = Path(tempfile.mkdtemp(prefix="bai-private-", dir="/tmp"))  # mode 0700: the agent needs a fallback share
    try:
        async with running_agent(data_dir=parent / "agent"):
            assert not orphan.exists()
            assert mounts.mounts_under(orphan) == []
    finally:
        mounts.unmount_under(orphan)
        shutil.rmtree(orphan, ignore_errors=True)
        shutil.rmtree(parent, ignore_errors=True)


@needs_hostfile
def test_default_cap_images_are_copies_of_one_mkfs_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images of the default cap are the data blocks of one mkfs.ext4 run, written again:
    each a clean ext4 of the cap's size; another cap runs mkfs itself."""
    images = tmp_path / "images"
    images.mkdir(mode=0o700)
    disks = ScratchDisks("hostfile", tmp_path / "scratch", images, CAP)
    runs: list[int] = []
    mkfs = disks._mkfs
    monkeypatch.setattr(disks, "_mkfs", lambda image, cap: (runs.append(cap), mkfs(image, cap))[1])
    for name, cap in (("a", CAP), ("b", CAP), ("c", 2 * CAP)):
        disks._format(images / name, cap)
        assert (images / name).stat().st_size == cap
        check = subprocess.run(["e2fsck", "-fn", str(images / name)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        header = subprocess.run(["dumpe2fs", "-h", str(images / name)], capture_output=True, text=True).stdout
        assert f"Block count:              {cap // 4096}" in header
    assert runs == [CAP, 2 * CAP]  # the template's, then the other cap's
    assert sorted(p.name for p in images.iterdir()) == ["a", "b", "c"]  # the template's file is gone
