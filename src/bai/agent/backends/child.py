"""A child process started off the event loop and watched from it.

``Popen`` with a ``preexec_fn`` forks (no vfork) and blocks its caller until the
child has exec'd; done on the event loop, every start would stall all other
sessions for that long. So children are started on one dedicated thread (the
``Spawner``), and then watched from the loop with a pidfd (exit) and a
non-blocking read of stderr (diagnostics): no polling, no per-child thread.

The spawner thread lives as long as the backend: bwrap's ``--die-with-parent``
is tied to the thread that forked it, which must not exit under a sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

DIAGNOSTICS_BYTES = 8192


class Spawner:
    """Starts children on one long-lived thread. ``close`` after the last child died."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bai-spawn")

    async def spawn(self, argv: Sequence[str], *, env: dict[str, str], preexec_fn: Callable[[], None]) -> WatchedChild:
        """Start ``argv`` with stdin and stdout on /dev/null and stderr captured.
        Raises OSError or subprocess.SubprocessError as Popen does."""
        loop = asyncio.get_running_loop()
        popen = await loop.run_in_executor(self._executor, _popen, list(argv), env, preexec_fn)
        return WatchedChild(popen)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _popen(argv: list[str], env: dict[str, str], preexec_fn: Callable[[], None]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        close_fds=False,  # the preexec_fn decides which fds survive exec
        start_new_session=True,
        env=env,
        # Safe here despite the spawner thread: the preexec_fn only makes system
        # calls (write, setuid, dup2, fcntl, listdir); it takes no lock of ours.
        preexec_fn=preexec_fn,  # noqa: PLW1509
    )


class WatchedChild:
    """Exit status and stderr of one child, delivered by the event loop."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.stderr_tail = bytearray()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._exited: asyncio.Future[int] = loop.create_future()
        self._stderr_closed: asyncio.Future[None] = loop.create_future()
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        assert popen.stderr is not None
        self._stderr_fd = popen.stderr.fileno()
        os.set_blocking(self._stderr_fd, False)
        loop.add_reader(self._stderr_fd, self._on_stderr)

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def _on_exit(self) -> None:
        if self.popen.poll() is None:
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        if not self._exited.done():
            self._exited.set_result(self.popen.returncode)

    def _on_stderr(self) -> None:
        try:
            chunk = os.read(self._stderr_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            self.stderr_tail += chunk
            del self.stderr_tail[:-DIAGNOSTICS_BYTES]
            return
        self._close_stderr()

    def _close_stderr(self) -> None:
        if self._stderr_closed.done():
            return
        self._loop.remove_reader(self._stderr_fd)
        assert self.popen.stderr is not None
        self.popen.stderr.close()
        self._stderr_closed.set_result(None)

    async def wait(self) -> int:
        """The exit status (negative: killed by that signal)."""
        return await asyncio.shield(self._exited)

    async def wait_stderr(self, timeout_s: float) -> None:
        """Wait until stderr reached its end (every writer exited), at most ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._stderr_closed)

    def kill(self) -> None:
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()

    def release(self) -> None:
        """Stop watching stderr (the child has been reaped)."""
        self._close_stderr()
