"""The local backend's host bookkeeping: data-dir locks, the share root (and its
fallback for data dirs other uids cannot reach), and cleanup after dead agents."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from agent_sandbox import make_config, new_session, run, running_agent, sandbox_unavailable, stdout_of

from bai.agent.agent import Agent
from bai.agent.backends.base import BackendUnavailable
from bai.agent.backends.local import backend as local
from bai.agent.backends.local.backend import LocalBackend
from bai.agent.cgroups import Limits, detect_driver
from tests.capabilities import needs

REASON = sandbox_unavailable()
pytestmark = [pytest.mark.sandbox, needs("sandbox", REASON)]


async def test_one_agent_per_data_dir() -> None:
    async with running_agent() as first:
        second = Agent(first.config.model_copy(update={"agent_id": "other"}))
        with pytest.raises(BackendUnavailable, match="another agent"):
            await second.start()


async def test_unreachable_data_dir_uses_a_fallback_share_root() -> None:
    parent = Path(tempfile.mkdtemp(prefix="bai-private-", dir="/tmp"))  # mode 0700, like /root
    try:
        async with running_agent(data_dir=parent / "agent") as agent:
            assert isinstance(agent.backend, LocalBackend)
            share = agent.backend.share_root
            assert share.parent == local.FALLBACK_SHARE_BASE
            session = await new_session(agent)
            result = await run(agent, session, "open('/home/work/x', 'w').write('1'); print('ok')")
            assert stdout_of(result) == "ok\n"
        assert not share.exists()
        assert (parent.stat().st_mode & 0o777) == 0o700  # the private parent was left as it was
    finally:
        shutil.rmtree(parent, ignore_errors=True)


async def test_orphaned_fallback_share_roots_are_swept() -> None:
    local.FALLBACK_SHARE_BASE.mkdir(parents=True, exist_ok=True)
    orphan = local.FALLBACK_SHARE_BASE / f"test-orphan-{uuid.uuid4().hex[:8]}"
    (orphan / "scratch" / "dead-session").mkdir(parents=True)
    (orphan / "scratch" / "dead-session" / "f").write_text("x")
    (orphan / "agent.lock").touch()
    held = local.FALLBACK_SHARE_BASE / f"test-held-{uuid.uuid4().hex[:8]}"
    held.mkdir()
    lock = local._try_lock(held / "agent.lock")
    assert lock is not None
    parent = Path(tempfile.mkdtemp(prefix="bai-private-", dir="/tmp"))
    try:
        async with running_agent(data_dir=parent / "agent"):
            assert not orphan.exists()
            assert held.exists()  # a live agent's: untouched
    finally:
        os.close(lock)
        shutil.rmtree(held, ignore_errors=True)
        shutil.rmtree(orphan, ignore_errors=True)
        shutil.rmtree(parent, ignore_errors=True)


async def test_a_restarted_agent_removes_what_a_killed_one_left() -> None:
    config = make_config()
    session_id = uuid.uuid4().hex
    driver = detect_driver(config.agent_id)
    assert driver is not None
    scratch = config.data_dir / "sandbox" / "scratch" / session_id
    scratch.mkdir(parents=True)
    (scratch / "left.txt").write_text("x")
    cgroup = driver.create(session_id, Limits(Decimal(1), 2**30, 64))
    agent = Agent(config)
    try:
        await agent.start()
        assert not scratch.exists()
        assert not any(path.exists() for path in cgroup.dirs)
    finally:
        await agent.stop()
        shutil.rmtree(config.data_dir, ignore_errors=True)
