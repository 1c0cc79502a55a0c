"""The spawn helper: a small process that forks sandboxes for the agent (bai.agent.backends.local.spawner).

Why: a sandbox's first process must join its cgroups and drop to its uid before it
execs bwrap, so it runs code between fork and exec, which rules out vfork and
posix_spawn. Forked from the agent, whose address space is large, each start cost the
agent ≈ 8 ms of CPU (page tables copied, copy-on-write faults in the child, that copy
torn down again at exec). Forked from this process (a bare interpreter, standard library
only, run as a script: ``python -I -S spawn_helper.py FD``), it costs a fraction of it.

Protocol, on the SOCK_SEQPACKET socket ``FD`` (one JSON object per message, file
descriptors as SCM_RIGHTS):

- agent → helper, a start: ``{"argv": [...], "env": {...}, "uid": int | null,
  "fds": n, "join": m}`` with the fds ``[stderr, fd 3, ..., fd 2+n, join 1..m]``: the
  child writes ``b"0"`` to each join fd (a cgroup's tasks / cgroup.procs, opened by the
  agent), drops to ``uid`` (groups, gid, uid) when given, starts a new session, gets
  /dev/null on stdin and stdout, ``stderr`` on fd 2 and the n fds on 3..2+n (every other
  fd is closed at exec), and execs ``argv`` with ``env``;
- helper → agent, its answer, in request order: ``{"pid": int}`` with the child's pidfd,
  once the exec succeeded, or ``{"error": str, "errno": int}``;
- helper → agent, whenever a child ends: ``{"exit": pid, "status": int}`` (the status as
  subprocess gives it: negative for a signal).

The helper is the parent of every sandbox's bwrap, so bwrap's ``--die-with-parent`` ties
the sandboxes to it; it ends, killing its children first, when the agent's end of the
socket closes (the agent stopped or died), and it gets SIGKILL if the thread that
started it exits (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import selectors
import signal
import socket
import sys

MAX_MESSAGE = 4 * 2**20  # argv + env; execve's own limit is lower
MAX_FDS = 64
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _exec_child(request: dict[str, object], fds: list[int], error_w: int) -> None:
    """In the forked child: never returns."""
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGPIPE, signal.SIGCHLD, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        count = int(request["fds"])  # type: ignore[call-overload]
        stderr, passed, join = fds[0], fds[1 : 1 + count], fds[1 + count :]
        for fd in join:
            os.write(fd, b"0")
        uid = request.get("uid")
        if isinstance(uid, int):
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        layout = [null, null, stderr, *passed]
        above = max(100, len(layout))  # no dup2 below overwrites a source
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above) for fd in layout]
        for target, fd in enumerate(high):
            os.dup2(fd, target)  # the targets are inheritable, everything else is close-on-exec
        argv = [str(arg) for arg in request["argv"]]  # type: ignore[attr-defined]
        env = {str(k): str(v) for k, v in request["env"].items()}  # type: ignore[attr-defined]
        os.execve(argv[0], argv, env)
    except BaseException as exc:
        number = exc.errno if isinstance(exc, OSError) and exc.errno else 0
        os.write(error_w, json.dumps({"error": str(exc), "errno": number}).encode()[:4000])
    finally:
        os._exit(127)


class Helper:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: set[int] = set()

    def send(self, message: dict[str, object], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(_fd_array(fds)))])
        else:
            self.sock.send(data)

    def start(self, request: dict[str, object], fds: list[int]) -> None:
        error_r, error_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
            if pid == 0:
                _exec_child(request, fds, error_w)
            self.children.add(pid)
            pidfd = os.pidfd_open(pid)  # the child is not reaped before the next loop turn
        finally:
            os.close(error_w)
            for fd in fds:
                os.close(fd)
        try:
            failure = _read_all(error_r)
        finally:
            os.close(error_r)
        if failure:
            os.close(pidfd)
            os.waitpid(pid, 0)
            self.children.discard(pid)
            self.send(json.loads(failure))
            return
        try:
            self.send({"pid": pid}, [pidfd])
        finally:
            os.close(pidfd)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"exit": pid, "status": os.waitstatus_to_exitcode(status)})

    def kill_all(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def receive(self) -> bool:
        """One request; False once the agent's end is closed."""
        data, ancillary, _, _ = self.sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * MAX_FDS), socket.MSG_CMSG_CLOEXEC)
        if not data:
            return False
        fds: list[int] = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += _fd_list(payload)
        try:
            request = json.loads(data)
            self.start(request, fds)
        except OSError as exc:
            self.send({"error": str(exc), "errno": exc.errno or 0})
        except (ValueError, KeyError, TypeError) as exc:
            self.send({"error": f"bad request: {exc!r}", "errno": 0})
        return True


def _fd_array(fds: list[int]) -> bytearray:
    out = bytearray()
    for fd in fds:
        out += fd.to_bytes(4, sys.byteorder, signed=True)
    return out


def _fd_list(payload: bytes) -> list[int]:
    usable = len(payload) - len(payload) % 4
    return [int.from_bytes(payload[i : i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4)]


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def main() -> None:
    _die_with_parent()
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.set_inheritable(False)
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    helper = Helper(sock)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "agent")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "signal":
                    while True:
                        try:
                            if not os.read(wake_r, 512):
                                break
                        except BlockingIOError:
                            break
                elif not helper.receive():
                    return
            helper.reap()
    finally:
        helper.kill_all()


if __name__ == "__main__":
    main()
