"""The runner's single-threaded event loop: fd readers, one-shot timers, child reaping.

The runner is PID 1 of the sandbox, so it reaps every process that ends up its child:
its own REPL children and the orphans of the user's code. SIGCHLD wakes the selector
through ``signal.set_wakeup_fd``; each reaped (pid, status) goes to one callback,
which ignores pids it does not own.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import selectors
import signal
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Callable, List, Optional

Callback = Callable[[], None]


@dataclass(order=True)
class Timer:
    when: float
    seq: int
    callback: Callback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


def _ignore_signal(signum: int, frame: Optional[FrameType]) -> None:
    """A Python-level handler, so that set_wakeup_fd is told of the signal."""


class Loop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: List[Timer] = []
        self._timer_seq = 0
        self._stopped = False
        self._wake_r = -1
        self._wake_w = -1
        self._on_child_exit: Optional[Callable[[int, int], None]] = None

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)

    def call_later(self, delay: float, callback: Callback) -> Timer:
        self._timer_seq += 1
        timer = Timer(time.monotonic() + delay, self._timer_seq, callback)
        heapq.heappush(self._timers, timer)
        return timer

    def watch_children(self, on_exit: Callable[[int, int], None]) -> None:
        """Reap every child as it ends and pass (pid, wait status) to ``on_exit``."""
        self._on_child_exit = on_exit
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, _ignore_signal)
        self.add_reader(self._wake_r, self._reap)

    def stop(self) -> None:
        self._stopped = True

    def run(self) -> None:
        self._reap()  # a child that ended before the handler was in place
        while not self._stopped:
            for key, _ in self._selector.select(self._timeout()):
                key.data()
                if self._stopped:
                    return
            self._run_due_timers()

    def forget_in_child(self) -> None:
        """In a forked child: drop the loop's signal wiring and close its fds, without
        touching the epoll set the parent still uses (no unregister)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self._selector.fileno(), self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)

    def _timeout(self) -> Optional[float]:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0].when - time.monotonic())

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0].when <= now:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()

    def _reap(self) -> None:
        if self._wake_r >= 0:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        while self._on_child_exit is not None:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._on_child_exit(pid, status)
