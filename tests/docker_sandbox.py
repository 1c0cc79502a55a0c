"""Helpers for the Docker backend's tests: whether they can run here (the probe the
``[docker]`` params of ``pytest.mark.backends`` modules skip by, tests/conftest.py), a
started ``Agent`` on the docker backend, and the container's parts. Imported as
``docker_sandbox`` (tests/ is on sys.path).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiodocker
from agent_sandbox import running_agent

from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.docker.sandbox import DockerSandbox

IMAGE = "bai/python:3.11"


#: how long the engine gets to answer ``version``: a socket whose engine hangs is no engine
ANSWER_TIMEOUT_S = 10.0


async def engine_unavailable(timeout_s: float = ANSWER_TIMEOUT_S) -> str | None:
    """Why no Docker engine answers at the address the docker backend would use (its
    ``docker_url`` unset: ``DOCKER_HOST``, the Docker context, then the default sockets),
    or None when one does. Every way the engine can be missing is a reason, never an
    exception: no address at all (aiodocker asserts then), a bad address, a socket
    nobody listens on, an engine that does not answer in ``timeout_s``."""
    try:
        docker = aiodocker.Docker()
    except (AssertionError, ValueError, OSError) as exc:
        # aiodocker asserts when neither DOCKER_HOST, a context nor a default socket exists
        return f"no Docker engine: {exc or 'no DOCKER_HOST and no Docker socket'}"
    try:
        async with asyncio.timeout(timeout_s):
            await docker.version()
    except TimeoutError:
        return f"the Docker engine at {docker.docker_host} did not answer in {timeout_s:g} s"
    except (aiodocker.DockerError, OSError) as exc:
        return f"no Docker engine answers: {exc}"
    finally:
        await docker.close()
    return None


async def image_missing(ref: str, name: str) -> str | None:
    """Why the kernel image ``ref`` (environment ``name``) cannot be used, or None; asks
    an engine that ``engine_unavailable`` found answering."""
    docker = aiodocker.Docker()
    try:
        await docker.images.inspect(ref)
    except aiodocker.DockerError:
        return f"the {ref} image is missing (bai image build {name})"
    finally:
        await docker.close()
    return None


async def _probe() -> str | None:
    return await engine_unavailable() or await image_missing(IMAGE, "python")


def docker_unavailable() -> str | None:
    """Why the docker backend cannot be tested here (not root, no engine, no image), or
    None when it can."""
    if os.geteuid() != 0:
        return "the docker backend's tests run as root (scratch disks, /run/bai-docker)"
    return asyncio.run(_probe())


@asynccontextmanager
async def docker_agent(**overrides: Any) -> AsyncIterator[Agent]:
    """A started agent on the docker backend, with no pool unless asked."""
    values: dict[str, Any] = {"backend": "docker", "pool_size": 0}
    values.update(overrides)
    async with running_agent(**values) as agent:
        yield agent


async def container_gone(container_id: str) -> bool:
    """Whether the engine no longer has the container (removed, not left stopped)."""
    docker = aiodocker.Docker()
    try:
        await docker.containers.get(container_id)
    except aiodocker.DockerError as exc:
        return exc.status == 404
    finally:
        await docker.close()
    return False


def processes_of(cgroup_dirs: list[Path]) -> list[int]:
    """The pids in a cgroup (v1: of its first controller; v2: the one dir), [] once it is gone."""
    try:
        return [int(pid) for pid in (cgroup_dirs[0] / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def container_of(agent: Agent, session_id: str) -> DockerSandbox:
    """The container sandbox behind one of ``agent``'s sessions."""
    assert isinstance(agent.backend, DockerBackend)
    return agent.backend.sandboxes[session_id]
