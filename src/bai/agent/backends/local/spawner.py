"""Children (the sandboxes' bwrap) started by the spawn helper and watched from the event loop.

A sandbox's first process joins its cgroups and drops to its uid before exec, so it
cannot be started with vfork or posix_spawn, and forking the agent (a large address
space) for each one cost the agent ≈ 8 ms of CPU per start. So the agent forks nothing:
``Spawner`` keeps one small helper process (spawn_helper.py, a bare interpreter) that
forks and execs for it, and talks to it over a SOCK_SEQPACKET socket read by the event
loop: a start is one message out (argv, env, uid and the fds) and one back (the pid
and a pidfd); a child's end is one message back (its exit status). No thread hop, no
polling. Stderr (diagnostics) is a pipe read without blocking by the loop.

The helper is started on one dedicated thread that lives as long as the backend: its
PR_SET_PDEATHSIG is tied to the thread that started it. It ends when the agent closes
its socket (``Spawner.close``) or dies, and bwrap's ``--die-with-parent`` takes the
sandboxes along. A helper that died is started again by the next spawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

DIAGNOSTICS_BYTES = 8192
HELPER = Path(__file__).with_name("spawn_helper.py")
HELPER_STOP_S = 5.0
SOCKET_BUFFER = 8 * 2**20  # one start's message (argv and env) must fit
SO_SNDBUFFORCE = 32  # <asm-generic/socket.h>; not in the socket module


class Spawner:
    """Starts children through the spawn helper. ``close`` after the last child died."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bai-spawn")
        self._client: SpawnHelperClient | None = None
        self._starting = asyncio.Lock()

    async def spawn(
        self, argv: Sequence[str], *, env: dict[str, str], uid: int | None, fds: Sequence[int], join: Sequence[int]
    ) -> WatchedChild:
        """Start ``argv`` with ``env``: stdin and stdout on /dev/null, stderr captured,
        ``fds`` on 3.. (all others closed), after writing ``b"0"`` to each of ``join``
        (cgroup join files) and dropping to ``uid``. Raises OSError when it cannot."""
        return await (await self._helper()).spawn(argv, env, uid, fds, join)

    async def _helper(self) -> SpawnHelperClient:
        """The client of the running helper, started if there is none (one at a time)."""
        async with self._starting:
            client = self._client
            if client is None or client.closed:
                loop = asyncio.get_running_loop()
                proc, sock = await loop.run_in_executor(self._executor, _start_helper)
                client = self._client = SpawnHelperClient(proc, sock)
            return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._executor.shutdown(wait=True)


def _start_helper() -> tuple[subprocess.Popen[bytes], socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:  # past net.core.wmem_max (root); else as large as that allows
        ours.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SOCKET_BUFFER)
    except PermissionError:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(HELPER), str(theirs.fileno())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            pass_fds=[theirs.fileno()],
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


class SpawnHelperClient:
    """The agent's end of one spawn helper's socket: start requests out, their answers
    and the children's exits in. Used by Spawner only."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._answers: deque[tuple[asyncio.Future[WatchedChild], int]] = deque()  # (future, stderr read end)
        self._children: dict[int, WatchedChild] = {}
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._on_readable)

    async def spawn(
        self, argv: Sequence[str], env: dict[str, str], uid: int | None, fds: Sequence[int], join: Sequence[int]
    ) -> WatchedChild:
        if self.closed:
            raise OSError("the spawn helper is gone")
        message = json.dumps({"argv": list(argv), "env": env, "uid": uid, "fds": len(fds), "join": len(join)})
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        future: asyncio.Future[WatchedChild] = self._loop.create_future()
        entry = (future, stderr_r)
        try:
            await self._send(message.encode(), [stderr_w, *fds, *join])
            self._answers.append(entry)
        except BaseException:
            os.close(stderr_r)
            raise
        finally:
            os.close(stderr_w)
        return await future

    async def _send(self, data: bytes, fds: list[int]) -> None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))]
        while True:
            try:
                self.sock.sendmsg([data], ancillary)
                return
            except BlockingIOError:
                writable = self._loop.create_future()
                self._loop.add_writer(self.sock.fileno(), _resolve, writable)
                try:
                    await writable
                finally:
                    self._loop.remove_writer(self.sock.fileno())

    def _on_readable(self) -> None:
        while not self.closed:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            except OSError:
                data, ancillary = b"", []
            fds = [int.from_bytes(payload[:4], sys.byteorder) for _, _, payload in ancillary if len(payload) >= 4]
            if not data:
                self._helper_gone()
                return
            self._dispatch(json.loads(data), fds)

    def _dispatch(self, message: dict[str, int | str], fds: list[int]) -> None:
        if "exit" in message:
            child = self._children.pop(int(message["exit"]), None)
            if child is not None:
                child.exited(int(message["status"]))
            return
        future, stderr_r = self._answers.popleft()
        if "error" in message:
            os.close(stderr_r)
            for fd in fds:
                os.close(fd)
            number = int(message.get("errno", 0))
            _fail(future, OSError(number, str(message["error"])) if number else OSError(str(message["error"])))
            return
        child = WatchedChild(int(message["pid"]), fds[0], stderr_r)
        self._children[child.pid] = child
        if future.done():  # its caller was cancelled: nobody will watch it
            child.kill()
            child.release()
        else:
            future.set_result(child)

    def _helper_gone(self) -> None:
        """The helper died (its children die with it: bwrap --die-with-parent)."""
        if not self.closed:
            self._shut()
            self._stop_helper()  # its socket is closed: it is exiting, if not gone already
            log.error("the spawn helper exited (status %s); the next start starts another", self.proc.returncode)
        for future, stderr_r in self._answers:
            os.close(stderr_r)
            _fail(future, OSError("the spawn helper is gone"))
        self._answers.clear()
        for child in self._children.values():
            child.exited(-signal.SIGKILL)
        self._children.clear()

    def _shut(self) -> None:
        if not self.closed:
            self.closed = True
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def close(self) -> None:
        """Close the socket: the helper kills what it still runs and exits."""
        self._shut()
        self._stop_helper()
        self._helper_gone()

    def _stop_helper(self) -> None:
        try:
            self.proc.wait(HELPER_STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[WatchedChild], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class WatchedChild:
    """Exit status and stderr of one child, delivered by the event loop."""

    def __init__(self, pid: int, pidfd: int, stderr_fd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stderr_tail = bytearray()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._pidfd: int | None = pidfd  # signals reach this child, never a reused pid
        self._exited: asyncio.Future[int] = loop.create_future()
        self._stderr_closed: asyncio.Future[None] = loop.create_future()
        self._stderr_fd: int | None = stderr_fd
        os.set_blocking(stderr_fd, False)
        loop.add_reader(stderr_fd, self._on_stderr)

    def exited(self, status: int) -> None:
        """The helper reaped it (SpawnHelperClient only)."""
        if self.returncode is None:
            self.returncode = status
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if not self._exited.done():
            self._exited.set_result(self.returncode)

    def _on_stderr(self) -> None:
        assert self._stderr_fd is not None
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
        if self._stderr_fd is None:
            return
        self._loop.remove_reader(self._stderr_fd)
        os.close(self._stderr_fd)
        self._stderr_fd = None
        if not self._stderr_closed.done():
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
        if self.returncode is None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def release(self) -> None:
        """Stop watching stderr (the child has been reaped)."""
        self._close_stderr()
