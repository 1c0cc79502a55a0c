"""Helpers for the Docker backend's tests: whether they can run here, a started
``Agent`` on the docker backend, and ``share``: the local backend's test functions of a
module, loaded again for a module that runs them on docker. Imported as
``docker_sandbox`` (tests/ is on sys.path).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import aiodocker
from agent_sandbox import running_agent

from bai.agent.agent import Agent
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.docker.sandbox import DockerSandbox

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


@asynccontextmanager
async def running_docker_agent(**overrides: Any) -> AsyncIterator[Agent]:
    """``agent_sandbox.running_agent`` on the docker backend (its pool as asked, as there)."""
    async with running_agent(backend="docker", **overrides) as agent:
        yield agent


def share(
    source: Path,
    into: dict[str, Any],
    local_only: Iterable[str] = (),
    fixtures: Iterable[str] = (),
    patch: Mapping[str, Any] | None = None,
) -> ModuleType:
    """Load the test module at ``source`` afresh and copy its test functions, but those
    named in ``local_only``, and the ``fixtures`` named, into ``into`` (a module's
    globals). ``patch`` replaces names in the loaded copy's globals, which its functions
    read when they run: e.g. ``running_agent`` by ``running_docker_agent``. A test name
    taken already is an error (two sources may not share one module then)."""
    spec = importlib.util.spec_from_file_location(f"_docker_{source.stem}", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, value in (patch or {}).items():
        assert hasattr(module, name), f"{source.name} has no {name} to replace"
        setattr(module, name, value)
    skipped, wanted = set(local_only), set(fixtures)
    unknown = skipped - set(vars(module))
    assert not unknown, f"no such tests in {source.name}: {sorted(unknown)}"
    for attr, value in vars(module).items():
        if (attr.startswith("test_") and callable(value) and attr not in skipped) or attr in wanted:
            assert attr not in into, f"{attr} of {source.name} is taken already"
            into[attr] = value
    return module
