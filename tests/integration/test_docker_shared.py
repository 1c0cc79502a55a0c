"""The local backend's agent-level tests, run again on the docker backend: the test
functions of ``test_agent_execute`` (state, continue, input, interrupt, exec timeout,
per-run figures, completion, restart, errors, output floods, info, limits) and
``test_sandbox_seccomp`` (each denied call fails with EPERM, the 32-bit ABI too,
ordinary programs keep working), with this module's ``agent`` fixture: a started agent
on the docker backend. Those that look at the local sandbox's own parts are left out
(``LOCAL_ONLY``). Skipped with the reason where Docker or the image is missing."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from docker_sandbox import docker_agent, docker_unavailable

from bai.agent.agent import Agent
from tests.capabilities import needs

REASON = docker_unavailable()
pytestmark = [pytest.mark.sandbox, needs("docker", REASON)]

LOCAL_ONLY = {
    "test_a_run_whose_sandbox_dies_still_reports_its_usage",  # kills the bwrap child's pid
    "test_create_failure_reports_the_reason_and_leaves_nothing",  # a broken bwrap path
    "test_info",  # asserts the backend's name, "local"
    # these start agents of their own (the local backend) for policy overlays
    "test_the_filter_is_what_denies",
    "test_an_overlay_loosens_and_tightens",
    "test_a_bad_policy_stops_the_backend_start",
    "test_an_environments_own_overlay_applies_after_the_operators",
    # these compile C with gcc, which the python image does not have
    "test_the_32_bit_abi_is_filtered_too",
    "test_ordinary_programs_keep_working",
}


def _load(name: str) -> ModuleType:
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_docker_shared_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


for _name in ("test_agent_execute", "test_sandbox_seccomp"):
    for _attr, _value in vars(_load(_name)).items():
        if _attr.startswith("test_") and callable(_value) and _attr not in LOCAL_ONLY:
            globals()[_attr] = _value


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    async with docker_agent() as started:
        yield started


@pytest.fixture
async def session(agent: Agent) -> str:
    from agent_sandbox import new_session

    return await new_session(agent)
