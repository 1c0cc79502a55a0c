"""Helpers for the Docker backend's tests: whether they can run here, and a started
``Agent`` on the docker backend. Imported as ``docker_sandbox`` (tests/ is on sys.path).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiodocker
from agent_sandbox import running_agent

from bai.agent.agent import Agent
from bai.agent.backends.docker import DockerBackend
from bai.agent.backends.docker_sandbox import DockerSandbox

IMAGE = "bai/python:3.11"


async def _probe() -> str | None:
    try:
        docker = aiodocker.Docker()
    except (OSError, ValueError) as exc:
        return f"no Docker client: {exc}"
    try:
        await docker.version()
    except (aiodocker.DockerError, OSError) as exc:
        return f"no Docker engine answers: {exc}"
    else:
        try:
            await docker.images.inspect(IMAGE)
        except aiodocker.DockerError:
            return f"the {IMAGE} image is missing (bai image build python)"
    finally:
        await docker.close()
    return None


def docker_unavailable() -> str | None:
    """Why the docker backend cannot be tested here, or None when it can."""
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


def container_of(agent: Agent, session_id: str) -> DockerSandbox:
    """The container sandbox behind one of ``agent``'s sessions."""
    assert isinstance(agent.backend, DockerBackend)
    return agent.backend.sandboxes[session_id]
