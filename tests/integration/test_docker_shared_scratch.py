"""The local backend's scratch-disk tests at the agent (``test_scratch_disk``: the cap
on /home/work and ENOSPC inside, the disk's life across restart and destroy, what backs
it in the agent's info, bad sizes, a session of another size beside the warm pool, an
uncapped hostdir) run again on the docker backend, for each capped kind (hostfile where
the host allows it, memory), with this module's ``agent`` fixture. A crashed agent's
leftovers are checked at the docker backend's own layout (a variant below); the local
backend's fallback share root has no docker counterpart. Skipped with the reason where
Docker or the image is missing."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_sandbox import make_config, new_session, run, stdout_of
from docker_sandbox import container_of, docker_unavailable, running_docker_agent, share

from bai.agent import mounts
from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.scratch import ScratchDisks
from tests.capabilities import needs

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]

LOCAL_ONLY = {
    "test_a_restarted_agent_releases_the_disks_a_killed_one_left": "the local layout; a docker variant is below",
    "test_an_orphaned_share_roots_scratch_mounts_are_released": "the local backend's fallback share root",
}

SCRATCH = share(
    Path(__file__).with_name("test_scratch_disk.py"),
    globals(),
    local_only=LOCAL_ONLY,
    patch={"running_agent": running_docker_agent, "sandbox_of": container_of, "LocalBackend": DockerBackend},
)
CAP = SCRATCH.CAP


@pytest.fixture(params=[pytest.param("hostfile", marks=SCRATCH.needs_hostfile), "memory"])
async def agent(request: pytest.FixtureRequest) -> AsyncIterator[Agent]:
    async with running_docker_agent(scratch_type=request.param, scratch_size=CAP, pool_size=0) as started:
        yield started


@SCRATCH.needs_hostfile
async def test_a_restarted_agent_releases_the_disks_a_killed_one_left_in_docker() -> None:
    config = make_config(scratch_type="hostfile", backend="docker", pool_size=0)
    root = config.data_dir / "docker" / "scratch"
    root.mkdir(parents=True)
    images = config.data_dir / "docker" / "scratch-images"
    makers = [ScratchDisks("hostfile", root, images, CAP), ScratchDisks("memory", root, images, CAP)]
    makers[0].prepare()
    disks = [maker.create(uuid.uuid4().hex, None, 1000, 1000) for maker in makers]
    (disks[0].path / "data").write_bytes(b"d" * 100_000)
    agent = Agent(config)
    try:
        await agent.start()
        assert mounts.mounts_under(root) == []
        assert not any(d.path.exists() for d in disks)
        assert list(images.iterdir()) == []
        assert str(disks[0].image) not in SCRATCH.loop_backing_files()
        session = await new_session(agent)
        assert stdout_of(await run(agent, session, "print('works')")) == "works\n"
    finally:
        await agent.stop()
        mounts.unmount_under(config.data_dir)
        shutil.rmtree(config.data_dir, ignore_errors=True)
