"""``Agent.execute`` and friends against real sandboxes and the real runner:
state, flush timeouts and continue, input, interrupt, exec timeout, completion,
restart, errors, output floods, create failures, and the hot path's cost; on both
backends (``[local]``, ``[docker]``) but where a test looks at the local sandbox's own
parts (``local_only``)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from agent_sandbox import (
    new_session,
    run,
    running_agent,
    sandbox_of,
    sandbox_unavailable,
    spec,
    stderr_of,
    stdout_of,
)

from bai.agent.agent import Agent
from bai.agent.backends.local.backend import LocalBackend
from bai.common.agent_rpc import CompleteRequest, ExecRequest, FileUpload
from bai.common.errors import InvalidRequest, SessionCreationFailed, SessionNotFound
from bai.common.wire import RunResult
from tests.capabilities import needs
from tests.waiting import until

REASON = sandbox_unavailable()
pytestmark = [pytest.mark.sandbox, needs("sandbox", REASON), pytest.mark.backends]


@pytest.fixture
async def agent(backend: str) -> AsyncIterator[Agent]:
    """A started agent on the test's backend (a docker one with no pool: each pooled
    container is a second start)."""
    async with running_agent(backend=backend, **({"pool_size": 0} if backend == "docker" else {})) as started:
        yield started


@pytest.fixture
async def session(agent: Agent) -> str:
    return await new_session(agent)


def query(session_id: str, code: str, flush: float = 10.0, run_id: str | None = None) -> ExecRequest:
    return ExecRequest(session_id=session_id, mode="query", code=code, flush_timeout_s=flush, run_id=run_id)


def follow(session_id: str, run_id: str, flush: float = 10.0) -> ExecRequest:
    return ExecRequest(session_id=session_id, mode="continue", run_id=run_id, flush_timeout_s=flush)


async def test_state_survives_across_runs(agent: Agent, session: str) -> None:
    first = await agent.execute(query(session, "x = 41"))
    assert (first.status, first.exit_code, first.console) == ("finished", 0, [])
    second = await agent.execute(query(session, "print(x + 1)"))
    assert (second.status, second.exit_code, second.console) == ("finished", 0, [("stdout", "42\n")])
    assert first.run_id != second.run_id


async def test_client_run_id_is_kept(agent: Agent, session: str) -> None:
    result = await agent.execute(query(session, "1", run_id="my-run"))
    assert result.run_id == "my-run"


async def test_exit_codes(agent: Agent, session: str) -> None:
    failed = await agent.execute(query(session, "1 / 0"))
    assert failed.exit_code == 1 and "ZeroDivisionError" in stderr_of(failed)
    exited = await agent.execute(query(session, "raise SystemExit(3)"))
    assert exited.exit_code == 3


async def until_output(agent: Agent, session: str, first: RunResult, needle: str) -> list[RunResult]:
    """``first`` and the answers that follow it (each still "continued", short flush
    timeouts) until the run has printed ``needle``: evidence that the user's code runs."""
    results = [first]
    while needle not in "".join(stdout_of(r) for r in results):
        assert results[-1].status == "continued", results
        results.append(await agent.execute(follow(session, first.run_id, flush=0.3)))
    return results


async def test_continue_after_a_flush_timeout(agent: Agent, session: str) -> None:
    """The run goes on until the test writes ``go`` into its work dir, so every answer
    before that is a flush timeout's, however slow the host."""
    code = "import os, time\nprint(0, flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\nprint(1)\n"
    started = time.monotonic()
    first = await agent.execute(query(session, code, flush=0.5))
    assert first.status == "continued"
    assert time.monotonic() - started >= 0.45  # the flush timeout (less the loop's clock resolution)
    results = await until_output(agent, session, first, "0\n")
    await agent.upload_file(FileUpload(session_id=session, path="go", max_bytes=1), _chunks(b"x"))
    while results[-1].status == "continued":
        results.append(await agent.execute(follow(session, first.run_id)))
    assert results[-1].status == "finished" and results[-1].exit_code == 0
    assert "".join(stdout_of(r) for r in results) == "0\n1\n"
    assert all(r.run_id == first.run_id for r in results)


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_a_query_while_a_run_is_in_progress_is_refused(agent: Agent, session: str) -> None:
    first = await agent.execute(query(session, "import time; time.sleep(1)", flush=0.1))
    assert first.status == "continued"
    with pytest.raises(InvalidRequest) as caught:
        await agent.execute(query(session, "1"))
    assert caught.value.field == "runId"
    with pytest.raises(InvalidRequest):
        await agent.execute(follow(session, "another-run"))
    last = await agent.execute(follow(session, first.run_id))
    assert last.status == "finished"


async def test_input_round_trip(agent: Agent, session: str) -> None:
    first = await agent.execute(query(session, "name = input('name? ')\nprint('hi', name)"))
    assert first.status == "waiting-input"
    assert first.is_password is False
    assert stdout_of(first) == "name? "
    with pytest.raises(InvalidRequest):
        await agent.execute(query(session, "1"))
    answer = await agent.execute(
        ExecRequest(session_id=session, mode="input", run_id=first.run_id, code="bob", flush_timeout_s=10)
    )
    assert (answer.status, answer.exit_code, stdout_of(answer)) == ("finished", 0, "hi bob\n")


async def test_password_input(agent: Agent, session: str) -> None:
    first = await agent.execute(query(session, "import getpass\nprint(len(getpass.getpass()))"))
    assert first.status == "waiting-input" and first.is_password is True
    answer = await agent.execute(
        ExecRequest(session_id=session, mode="input", run_id=first.run_id, code="secret", flush_timeout_s=10)
    )
    assert stdout_of(answer).endswith("6\n")


async def test_input_needs_a_waiting_run(agent: Agent, session: str) -> None:
    with pytest.raises(InvalidRequest):
        await agent.execute(ExecRequest(session_id=session, mode="input", code="x"))


async def test_interrupt(agent: Agent, session: str) -> None:
    first = await agent.execute(query(session, "print('started', flush=True)\nimport time\ntime.sleep(30)", flush=0.3))
    await until_output(agent, session, first, "started")
    await agent.interrupt(session)
    last = await agent.execute(follow(session, first.run_id))
    assert last.status == "finished"
    assert "KeyboardInterrupt" in stderr_of(last)
    after = await agent.execute(query(session, "print('still here')"))
    assert stdout_of(after) == "still here\n"


async def test_exec_timeout(agent: Agent) -> None:
    session = await new_session(agent, exec_timeout_s=0.5)
    result = await asyncio.wait_for(run(agent, session, "while True:\n    pass\n"), 60)  # it never ends itself
    assert result.status == "exec-timeout"
    quick = await agent.execute(query(session, "print('ok')"))
    assert (quick.status, stdout_of(quick)) == ("finished", "ok\n")
    # the timed-out run's figures came with its answer: it spun until it was stopped
    assert result.stats is not None
    assert result.stats.wall_ms >= 500 and result.stats.cpu_ms > 0


@pytest.mark.local_only(reason="kills the bwrap child's pid")
async def test_a_run_whose_sandbox_dies_still_reports_its_usage(agent: Agent, session: str) -> None:
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2:\n    pass\n"
    first = await agent.execute(query(session, code + "print('spun', flush=True)\ntime.sleep(60)\n", flush=0.3))
    seen = stdout_of(first)
    while "spun" not in seen:
        answer = await agent.execute(follow(session, first.run_id, flush=0.3))
        assert answer.status == "continued"
        seen += stdout_of(answer)
    sandbox = sandbox_of(agent, session)
    assert sandbox.child_pid is not None
    os.kill(sandbox.child_pid, signal.SIGKILL)  # the runner dies mid-run
    result = await agent.execute(follow(session, first.run_id))
    assert result.status == "finished" and result.exit_code == 137
    assert result.stats is not None
    assert result.stats.cpu_ms >= 200 and result.stats.wall_ms >= 200


async def test_the_sessions_peak_outlives_per_run_resets(agent: Agent, session: str) -> None:
    big = await agent.execute(query(session, "x = b'x' * (100 * 2**20)\ndel x"))
    assert big.stats is not None and big.stats.mem_peak >= 100 * 2**20
    small = await agent.execute(query(session, "1"))
    assert small.stats is not None and small.stats.mem_peak < 60 * 2**20
    # the destroy figures still show the session's high-water mark
    final = await agent.destroy_session(session)
    assert final.mem_max >= 100 * 2**20


async def test_complete(agent: Agent, session: str) -> None:
    await agent.execute(query(session, "import os\nfoo_bar_baz = 1"))
    items = await agent.complete(CompleteRequest(session_id=session, code="os.pa"))
    assert "os.path" in items or "path" in items
    mine = await agent.complete(CompleteRequest(session_id=session, code="foo_bar"))
    assert any("foo_bar_baz" in item for item in mine)


async def test_restart_keeps_scratch_and_drops_state(agent: Agent, session: str) -> None:
    await agent.execute(query(session, "x = 1\nopen('/home/work/kept', 'w').write('yes')"))
    await agent.restart_session(session)
    result = await agent.execute(query(session, "print('x' in globals(), open('/home/work/kept').read())"))
    assert stdout_of(result) == "False yes\n"
    assert result.stats is not None and result.stats.mem_peak > 0  # the meter outlives a restart


async def test_restart_during_a_run(agent: Agent, session: str) -> None:
    first = await agent.execute(query(session, "import time\ntime.sleep(30)", flush=0.2))
    assert first.status == "continued"
    await agent.restart_session(session)
    result = await agent.execute(query(session, "print('fresh')"))
    assert stdout_of(result) == "fresh\n"


async def test_unknown_session(agent: Agent) -> None:
    with pytest.raises(SessionNotFound):
        await agent.execute(query("nope", "1"))
    with pytest.raises(SessionNotFound):
        await agent.destroy_session("nope")
    with pytest.raises(SessionNotFound):
        await agent.session_stats("nope")


async def test_duplicate_and_unknown_environment(agent: Agent, session: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await agent.create_session(spec(session))
    assert caught.value.field == "session_id"
    with pytest.raises(InvalidRequest) as caught:
        await agent.create_session(spec(environment="cobol"))
    assert caught.value.field == "environment"
    with pytest.raises(InvalidRequest) as caught:
        await agent.create_session(spec(output_limit_bytes=-1))
    assert caught.value.field == "output_limit_bytes"


async def test_output_flood_is_capped_per_response_and_complete(agent: Agent) -> None:
    chunk, count = 65536, 200  # 12.5 MiB: under this session's output limit, over the default
    session = await new_session(agent, output_limit_bytes=16 * 2**20)
    result = await agent.execute(
        query(session, f"import sys\nfor _ in range({count}):\n    sys.stdout.write('x' * {chunk})\n")
    )
    total = 0
    backlog_seen = 0
    local_session = agent.sessions[session]
    for _ in range(1000):
        out = stdout_of(result)
        assert len(out) <= 512 * 1024
        total += len(out)
        backlog_seen = max(backlog_seen, local_session.runs.backlog_bytes)
        if result.status != "continued":
            break
        result = await agent.execute(follow(session, result.run_id))
    assert result.status == "finished" and result.exit_code == 0
    assert total == chunk * count
    assert result.stats is not None
    assert (result.stats.output_bytes, result.stats.output_truncated) == (chunk * count, False)
    # the socket is paused beyond the backlog limit: the agent never held the whole flood
    assert backlog_seen < agent.config.max_backlog_bytes + 2 * 2**20


async def test_create_failure_reports_the_reason_and_leaves_nothing() -> None:
    # no pool: its retries would hold sandboxes of their own while this one fails
    async with running_agent(runner_python="/usr/bin/no-such-python", pool_size=0) as agent:
        with pytest.raises(SessionCreationFailed) as caught:
            await agent.create_session(spec())
        assert "no-such-python" in caught.value.message
        assert agent.sessions == {}
        assert isinstance(agent.backend, LocalBackend)
        assert agent.backend.sandboxes == {}
        assert list(agent.backend.scratch_root.iterdir()) == []


@pytest.mark.local_only(reason="asserts the backend's name, \"local\"")
async def test_info(agent: Agent, session: str) -> None:
    info = agent.info()
    assert info.agent_id == agent.config.agent_id
    assert info.backend == "local"
    # what the catalog has and this host can run, by name and name:tag (bai env list)
    assert {"python", "python:3.11", "shell", "shell:bash"} <= set(info.environments)
    assert info.environments == sorted(info.environments) and "julia" not in info.environments
    # the hardware times the overcommit ratios (docs/decisions/0005)
    assert Decimal(info.capacity["cpu"]) == os.cpu_count() * agent.config.cpu_overcommit
    with open("/proc/meminfo") as f:
        meminfo = dict(line.split(":", 1) for line in f.read().splitlines())
    mem_total = int(meminfo["MemTotal"].split()[0]) * 1024
    assert Decimal(info.capacity["mem"]) == mem_total * agent.config.mem_overcommit
    assert info.sessions == [session]
    assert info.rpc_url.startswith("inproc://")


async def test_default_limits(agent: Agent, session: str) -> None:
    stats = await agent.session_stats(session)
    assert (stats.mem_limit, stats.cpu_limit) == (2**30, "1")


async def test_interrupt_reaches_a_runner_blocked_by_backpressure(agent: Agent, session: str) -> None:
    first = await agent.execute(query(session, "while True:\n    print('x' * 10000)\n", flush=0.5))
    assert first.status == "continued"
    # nobody continues: the agent stops reading, the runner blocks on its socket
    connection = agent.sessions[session].runner
    assert connection is not None
    await until(lambda: connection.paused, what="the agent to stop reading the runner")
    await agent.interrupt(session)
    result = first
    for _ in range(200):
        if result.status != "continued":
            break
        result = await agent.execute(follow(session, first.run_id, flush=5))
    assert result.status == "finished"
    after = await agent.execute(query(session, "print('alive')"))
    assert stdout_of(after) == "alive\n"
