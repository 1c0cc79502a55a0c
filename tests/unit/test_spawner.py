"""The spawn helper (bai.agent.backends.local.spawner, spawn_helper.py): what a child gets (fds 0-2
and the given ones on 3.., nothing else; the join writes; the uid and no groups; a new
session), exit statuses and stderr, exec failures as OSError, kill, and the helper's end:
a helper that died is replaced, and closing the spawner ends what it still runs."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest

from bai.agent.backends.local.spawner import Spawner
from tests.waiting import until

PY = "/usr/bin/python3"
ENV = {"PATH": "/usr/bin:/bin"}


@pytest.fixture
async def spawner() -> AsyncIterator[Spawner]:
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.close()


def _read_pipe(fd: int) -> bytes:
    os.set_blocking(fd, True)
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


async def test_a_child_gets_its_fds_status_and_stderr(spawner: Spawner) -> None:
    out_r, out_w = os.pipe()
    stray_r, stray_w = os.pipe()  # inheritable fds of the agent must not reach the child
    os.set_inheritable(stray_w, True)
    code = (
        "import os, sys; os.write(3, (' '.join(sorted(os.listdir('/proc/self/fd'), key=int)) + '|'"
        " + str(os.getsid(0) == os.getpid())).encode()); sys.stderr.write('oops'); sys.exit(3)"
    )
    try:
        child = await spawner.spawn([PY, "-c", code], env=ENV, uid=None, fds=[out_w], join=[])
    finally:
        os.close(out_w)
        os.close(stray_w)
        os.close(stray_r)
    assert await child.wait() == 3
    await child.wait_stderr(5)
    fds, new_session = _read_pipe(out_r).decode().split("|")
    assert set(fds.split()) <= {"0", "1", "2", "3", "4"}  # 4: listdir's own
    assert new_session == "True"
    assert child.stderr_tail == b"oops"
    assert child.returncode == 3


async def test_the_child_joins_then_drops_to_its_uid(spawner: Spawner) -> None:
    join_r, join_w = os.pipe()  # stands for a cgroup's tasks file
    out_r, out_w = os.pipe()
    code = "import os; os.write(3, repr((os.getuid(), os.getgid(), os.getgroups())).encode())"
    try:
        child = await spawner.spawn([PY, "-c", code], env=ENV, uid=65534, fds=[out_w], join=[join_w])
    finally:
        os.close(out_w)
        os.close(join_w)
    assert await child.wait() == 0
    assert _read_pipe(join_r) == b"0"
    assert _read_pipe(out_r) == b"(65534, 65534, [])"


async def test_an_exec_failure_is_an_oserror(spawner: Spawner) -> None:
    with pytest.raises(FileNotFoundError):
        await spawner.spawn(["/nonexistent/bwrap"], env=ENV, uid=None, fds=[], join=[])
    child = await spawner.spawn(["/bin/true"], env=ENV, uid=None, fds=[], join=[])  # still serving
    assert await child.wait() == 0


async def test_kill_and_concurrent_starts(spawner: Spawner) -> None:
    children = await asyncio.gather(
        *(spawner.spawn(["/bin/sleep", "60"], env=ENV, uid=None, fds=[], join=[]) for _ in range(5))
    )
    assert len({child.pid for child in children}) == 5
    for child in children:
        child.kill()
    assert [await child.wait() for child in children] == [-signal.SIGKILL] * 5


async def test_a_dead_helper_is_replaced(spawner: Spawner) -> None:
    child = await spawner.spawn(["/bin/sleep", "60"], env=ENV, uid=None, fds=[], join=[])
    client = spawner._client
    assert client is not None
    client.proc.kill()
    async with asyncio.timeout(10):
        assert await child.wait() == -signal.SIGKILL  # reported as killed: gone with its parent
    os.kill(child.pid, signal.SIGKILL)  # a plain sleep has no --die-with-parent
    again = await spawner.spawn(["/bin/true"], env=ENV, uid=None, fds=[], join=[])
    assert spawner._client is not client
    assert await again.wait() == 0


async def test_close_ends_what_still_runs() -> None:
    spawner = Spawner()
    child = await spawner.spawn(["/bin/sleep", "3600"], env=ENV, uid=None, fds=[], join=[])
    pidfd = os.pidfd_open(child.pid)

    def reaped() -> bool:
        try:
            signal.pidfd_send_signal(pidfd, 0)  # a zombie still takes a signal: only a reaped one is gone
        except ProcessLookupError:
            return True
        return False

    try:
        assert not reaped()
        spawner.close()
        await until(reaped, what="the child killed and reaped by the helper")
    finally:
        os.close(pidfd)
    assert await child.wait() == -signal.SIGKILL


async def test_a_large_environment_gets_through(spawner: Spawner) -> None:
    out_r, out_w = os.pipe()
    env = {**ENV, **{f"V{i}": "x" * 100_000 for i in range(12)}}  # 1.2 MB, each value under MAX_ARG_STRLEN
    code = "import os; os.write(3, str(sum(len(v) for k, v in os.environ.items() if k.startswith('V'))).encode())"
    try:
        child = await spawner.spawn([PY, "-c", code], env=env, uid=None, fds=[out_w], join=[])
    finally:
        os.close(out_w)
    assert await child.wait() == 0
    assert _read_pipe(out_r) == b"1200000"
