"""A stop that always ends (bai.common.stopping): the budget its steps share, a step that
overruns it logged with what it waited on and abandoned, and an event loop whose teardown
exits rather than wait on what ignores its end (run in a subprocess: it calls os._exit)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap

import pytest

from bai.common.stopping import ABANDONED_EXIT_STATUS, StopBudget, awaiting


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_counts_down_from_the_stop_not_from_its_making() -> None:
    clock = Clock()
    budget = StopBudget(5.0, clock)
    clock.now += 60  # the daemon ran a minute
    assert budget.left() == 5.0
    budget.begin()
    clock.now += 2
    assert budget.left() == 3.0
    budget.begin()  # a second begin changes nothing
    clock.now += 10
    assert budget.left() == 0.0


async def _waits_on(future: asyncio.Future[None]) -> None:
    await future


async def _never_ends() -> None:
    await _waits_on(asyncio.get_running_loop().create_future())


async def test_a_step_that_never_ends_is_logged_with_what_it_waited_on_and_abandoned(
        caplog: pytest.LogCaptureFixture) -> None:
    budget = StopBudget(0.5)
    after: list[str] = []

    async def next_step() -> None:
        after.append("ran")

    with caplog.at_level(logging.INFO, logger="bai.common.stopping"):
        assert await budget.step("waiting forever", _never_ends()) is False
        assert await budget.step("the next step", next_step()) is True
    assert after == ["ran"] and budget.abandoned == ["waiting forever"]
    abandoned = next(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert abandoned.startswith("stop: waiting forever did not end within the stop's 0.5 s; abandoned while it "
                                "waited on _never_ends (test_stopping.py:")
    assert "-> _waits_on (test_stopping.py:" in abandoned and "-> <Future pending" in abandoned
    await asyncio.sleep(0)  # one turn of the loop: the abandoned step was cancelled, and is gone
    assert "stop: waiting forever" not in {t.get_name() for t in asyncio.all_tasks()}


async def test_a_step_that_fails_is_logged_and_the_stop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("the store is gone")

    assert await StopBudget(5.0).step("closing the store", fails()) is True
    assert "stop: closing the store failed: RuntimeError('the store is gone')" in caplog.text


async def test_awaiting_names_a_task_that_has_not_run_yet() -> None:
    task = asyncio.get_running_loop().create_task(_never_ends())
    assert awaiting(task).startswith("_never_ends (test_stopping.py:")
    task.cancel()


def _run_bounded(body: str) -> subprocess.CompletedProcess[str]:
    """``body`` defines ``main()``; run it through ``run_bounded`` with a 1 s budget."""
    program = textwrap.dedent("""
        import asyncio, logging, threading
        from bai.common.stopping import StopBudget, run_bounded
        logging.basicConfig(level=logging.ERROR)
    """) + textwrap.dedent(body) + "\nrun_bounded(main(), StopBudget(1.0))\nprint('exited normally')\n"
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)


def test_the_teardown_exits_rather_than_wait_on_a_task_that_ignores_its_cancellation() -> None:
    done = _run_bounded("""
        async def stubborn():
            while True:
                try:
                    await asyncio.get_running_loop().create_future()
                except asyncio.CancelledError:
                    pass

        async def main():
            asyncio.get_running_loop().create_task(stubborn(), name="stubborn")
            await asyncio.sleep(0)
    """)
    assert done.returncode == ABANDONED_EXIT_STATUS, done.stderr
    assert "stop: exiting without waiting for task stubborn at stubborn (<string>:" in done.stderr
    assert "exited normally" not in done.stdout


def test_the_teardown_exits_rather_than_join_a_thread_blocked_for_good() -> None:
    done = _run_bounded("""
        async def main():
            asyncio.get_running_loop().run_in_executor(None, threading.Event().wait)
            await asyncio.sleep(0)
    """)
    assert done.returncode == ABANDONED_EXIT_STATUS, done.stderr
    assert "stop: exiting without waiting for the default executor's threads: asyncio_0" in done.stderr


def test_a_teardown_with_nothing_left_exits_normally() -> None:
    done = _run_bounded("""
        async def main():
            await asyncio.to_thread(lambda: None)
            asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    """)
    assert (done.returncode, done.stdout.strip()) == (0, "exited normally"), done.stderr
