"""A stop that always ends: a time budget shared by the steps of a daemon's stop, and
a run of its event loop whose teardown keeps to that budget.

Used by ``bai server`` (bai.server), ``bai manager`` (bai.manager.cli) and ``bai agent``
(bai.agent.cli). Each step of their stop runs through ``StopBudget.step``: a step that
is still busy when the budget is spent is logged with what it waited on (the chain of
awaits its task is suspended in), cancelled and abandoned, and the stop goes on with the
next step. The budget is a guard: each step is meant to end well within it on its own
(a stop that needs it has a bug, which its log line names).

``run_bounded`` is ``asyncio.run`` for those commands: after ``main`` returns, the tasks
still pending are cancelled and the default executor is shut down within what is left of
the budget; if something still holds the process (an abandoned task that ignores its
cancellation, a thread blocked in a system call), it says what and exits anyway rather
than waiting on it forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

log = logging.getLogger(__name__)

#: a stop's default bound, in seconds (each command's ``--stop-timeout``)
DEFAULT_STOP_TIMEOUT_S: Final = 5.0
#: what the event loop's teardown keeps of a stop's budget (``run_bounded``)
TEARDOWN_RESERVE_S: Final = 0.5
#: the name prefix of the default executor's threads under ``run_bounded``
EXECUTOR_THREADS: Final = "asyncio"
#: the exit status of a process whose teardown had to be abandoned
ABANDONED_EXIT_STATUS: Final = 70  # EX_SOFTWARE


class StopBudget:
    """``total_s`` seconds for a whole stop, counted from ``begin`` (or the first step) on
    ``clock`` (monotonic; a test may pass its own). Made when the daemon starts, handed to
    what stops it and to ``run_bounded``. ``abandoned`` names the steps that overran.

    The steps share all of it but a reserve (``TEARDOWN_RESERVE_S``, at most a fifth),
    which is the event loop's teardown's."""

    def __init__(self, total_s: float = DEFAULT_STOP_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total_s = total_s
        self._clock = clock
        self._deadline: float | None = None
        self._reserve = min(TEARDOWN_RESERVE_S, total_s / 5)
        self.abandoned: list[str] = []

    def begin(self) -> None:
        """The stop begins: the budget counts down from now (later calls change nothing)."""
        if self._deadline is None:
            self._deadline = self._clock() + self.total_s

    def left(self) -> float:
        """Seconds left of the budget (all of it before ``begin``; 0 once spent)."""
        if self._deadline is None:
            return self.total_s
        return max(0.0, self._deadline - self._clock())

    async def step(self, name: str, work: Coroutine[Any, Any, None]) -> bool:
        """Run one step of the stop within what is left of the budget. True when it ended
        (an error it raised is logged: the stop goes on); False when it overran, was
        logged with what it waited on, cancelled and abandoned."""
        self.begin()
        began = self._clock()
        task = asyncio.get_running_loop().create_task(work, name=f"stop: {name}")
        done, _ = await asyncio.wait({task}, timeout=max(0.0, self.left() - self._reserve))
        if task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("stop: %s failed: %r", name, error, exc_info=error)
            log.info("stop: %s took %.2f s", name, self._clock() - began)
            return True
        log.error("stop: %s did not end within the stop's %.1f s; abandoned while it waited on %s",
                  name, self.total_s, awaiting(task))
        self.abandoned.append(name)
        task.cancel()
        return False


def awaiting(task: asyncio.Task[Any]) -> str:
    """Where a suspended task waits: each coroutine of its chain of awaits as
    ``function (file:line)``, innermost last, then the awaitable it is suspended on."""
    links: list[str] = []
    current: Any = task.get_coro()
    while current is not None:
        frame = getattr(current, "cr_frame", None) or getattr(current, "gi_frame", None) \
            or getattr(current, "ag_frame", None)
        if frame is None:  # a future's iterator: the future itself is the task's waiter
            links.append(_short(getattr(task, "_fut_waiter", None) or current))
            break
        code = frame.f_code
        links.append(f"{code.co_name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})")
        current = getattr(current, "cr_await", None) or getattr(current, "gi_yieldfrom", None) \
            or getattr(current, "ag_await", None)
    return " -> ".join(links) or "nothing (it had not started)"


def _short(awaitable: object) -> str:
    text = repr(awaitable)
    return text if len(text) <= 200 else text[:197] + "..."


def run_bounded(main: Coroutine[Any, Any, None], budget: StopBudget) -> None:
    """``asyncio.run(main)`` whose teardown keeps to ``budget``, the one ``main``'s stop
    spends (not begun: the teardown begins it). What outlives the budget is logged and the
    process exits with ``ABANDONED_EXIT_STATUS`` (``os._exit``: the interpreter would join
    the threads still running, and wait on them forever)."""
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix=EXECUTOR_THREADS)
    loop.set_default_executor(executor)  # ours, to join its threads with a timeout
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        budget.begin()
        left = _tear_down(loop, executor, budget)
        asyncio.set_event_loop(None)
        if left:
            log.error("stop: exiting without waiting for %s", "; ".join(left))
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(ABANDONED_EXIT_STATUS)
        loop.close()


def _tear_down(loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor, budget: StopBudget) -> list[str]:
    """Cancel what is pending and shut the default executor down within the budget;
    returns what is still running after it (empty: all ended)."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    left: list[str] = []
    if pending:
        done, stuck = loop.run_until_complete(asyncio.wait(pending, timeout=budget.left()))
        left += [f"task {task.get_name()} at {awaiting(task)}" for task in stuck]
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                loop.call_exception_handler({"message": "unhandled exception during shutdown",
                                             "exception": task.exception(), "task": task})
    loop.run_until_complete(loop.shutdown_asyncgens())
    threads = _shut_executor(executor, budget.left())
    if threads:
        left.append("the default executor's threads: " + ", ".join(threads))
    return left


def _shut_executor(executor: ThreadPoolExecutor, timeout_s: float) -> list[str]:
    """The names of the default executor's threads still busy ``timeout_s`` after it was
    shut down. (Not ``loop.shutdown_default_executor``: on Python 3.11 it joins the
    threads with no timeout once its own wait is cancelled, as ``asyncio.run`` does.)"""
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + timeout_s
    stuck: list[str] = []
    for thread in threading.enumerate():
        if thread.name.startswith(EXECUTOR_THREADS + "_"):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                stuck.append(thread.name)
    return stuck


__all__ = ["ABANDONED_EXIT_STATUS", "DEFAULT_STOP_TIMEOUT_S", "TEARDOWN_RESERVE_S", "StopBudget", "awaiting",
           "run_bounded"]
