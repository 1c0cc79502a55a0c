"""The runner's single-threaded event loop: fd readers, one-shot timers, child reaping.

Readers are watched with epoll directly (what ``selectors.DefaultSelector`` picks on
Linux; the module is not imported, to save start-up time).

The runner is PID 1 of the sandbox, so it reaps every process that ends up its child:
its own REPL children and the orphans of the user's code. SIGCHLD wakes the selector
through ``signal.set_wakeup_fd``; each reaped (pid, status) goes to one callback,
which ignores pids it does not own.
"""

from __future__ import annotations

import _heapq  # heapq.py is this C module, and a quarter millisecond of Python
import contextlib
import os
import select
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    import signal as _signal
    from types import FrameType
    from typing import Callable, Dict, List, Optional

    Callback = Callable[[], None]
else:
    import _signal  # signal.py's C core, loaded at start-up anyway: signal.py adds enums (a ms)


class Timer:
    """A one-shot timer; ordered by (when, seq) in the loop's heap."""

    __slots__ = ("callback", "cancelled", "seq", "when")

    def __init__(self, when: float, seq: int, callback: Callback) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def __lt__(self, other: Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


def _ignore_signal(signum: int, frame: Optional[FrameType]) -> None:
    """A Python-level handler, so that set_wakeup_fd is told of the signal."""


class Loop:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: Dict[int, Callback] = {}
        self._timers: List[Timer] = []
        self._timer_seq = 0
        self._stopped = False
        self._wake_r = -1
        self._wake_w = -1
        self._on_child_exit: Optional[Callable[[int, int], None]] = None

    def add_reader(self, fd: int, callback: Callback) -> None:
        if fd in self._readers:
            raise KeyError("fd %d is already registered" % fd)
        self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            with contextlib.suppress(OSError):  # closed already: the kernel dropped it from the set
                self._epoll.unregister(fd)

    def call_later(self, delay: float, callback: Callback) -> Timer:
        self._timer_seq += 1
        timer = Timer(time.monotonic() + delay, self._timer_seq, callback)
        _heapq.heappush(self._timers, timer)
        return timer

    def watch_children(self, on_exit: Callable[[int, int], None]) -> None:
        """Reap every child as it ends and pass (pid, wait status) to ``on_exit``."""
        self._on_child_exit = on_exit
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        _signal.set_wakeup_fd(self._wake_w)
        _signal.signal(_signal.SIGCHLD, _ignore_signal)
        self.add_reader(self._wake_r, self._reap)

    def stop(self) -> None:
        self._stopped = True

    def run(self) -> None:
        self._reap()  # a child that ended before the handler was in place
        while not self._stopped:
            timeout = self._timeout()
            events = self._epoll.poll(-1 if timeout is None else timeout)
            # The callbacks of this batch, taken before any runs: one that removes
            # and re-adds an fd number cannot hand a stale event to the new reader.
            ready = [self._readers[fd] for fd, _ in events if fd in self._readers]
            for callback in ready:
                callback()
                if self._stopped:
                    return
            self._run_due_timers()

    def forget_in_child(self) -> None:
        """In a forked child: drop the loop's signal wiring and close its fds, without
        touching the epoll set the parent still uses (no unregister)."""
        _signal.set_wakeup_fd(-1)
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        for fd in (self._epoll.fileno(), self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)

    def _timeout(self) -> Optional[float]:
        while self._timers and self._timers[0].cancelled:
            _heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0].when - time.monotonic())

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0].when <= now:
            timer = _heapq.heappop(self._timers)
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
