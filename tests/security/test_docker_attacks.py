"""The attacks on the host through /home/work of ``test_scratch_attacks`` (a disk fill
past the scratch cap; planted links, fifos, a deep tree and hard links against stats,
restart and destroy, through the API and at the agent for each kind of scratch disk),
run again on the docker backend (``test_file_attacks`` runs on both by parametrisation).
``backend`` is "docker" here, so that ``bai_server`` is the run's docker server and
``fresh_server`` a docker server of the test's own; ``kind_agent`` is a docker agent; the
loaded copy sees the docker backend's layout (``LocalBackend`` is ``DockerBackend``
there, the hostfile images are under ``docker/scratch-images``). Skipped with the reason
where Docker or the image is missing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from docker_sandbox import container_of, docker_unavailable, running_docker_agent, share

from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from tests.capabilities import needs

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]

SCRATCH = share(
    Path(__file__).with_name("test_scratch_attacks.py"),
    globals(),
    fixtures={"small_scratch", "small_api"},
    patch={
        "running_agent": running_docker_agent,
        "sandbox_of": container_of,
        "LocalBackend": DockerBackend,
        "SCRATCH_IMAGES": "docker/scratch-images",
    },
)

# its bubblewrap check is the local backend's: here Docker's (this module's pytestmark) applies
_kinds = SCRATCH.test_planted_links_survive_every_agent_step_for_each_kind
_kinds.pytestmark = [mark for mark in _kinds.pytestmark if mark != SCRATCH.needs_sandbox.mark]


@pytest.fixture
def backend() -> str:
    """The servers of tests/conftest.py (``bai_server``, ``fresh_server``) on docker."""
    return "docker"


@pytest.fixture(params=[pytest.param("hostfile", marks=SCRATCH.needs_hostfile), "memory", "hostdir"])
async def kind_agent(request: pytest.FixtureRequest) -> AsyncIterator[Agent]:
    async with running_docker_agent(scratch_type=request.param, scratch_size=SCRATCH.CAP, pool_size=0) as started:
        yield started
