"""A sandbox whose runner is the test: the agent's end of a socketpair is the
sandbox's ``runner_socket``; the test holds the other end and writes whatever frames
it likes on it (a runner of another version, a compromised sandbox's), or reads what
the agent sent. ``FakeBackend`` makes such sandboxes for a real ``Agent``.

Imported as ``fake_runner`` (tests/ is on sys.path through tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar

from bai.agent.backends.base import Backend, Sandbox
from bai.agent.cgroups import Limits
from bai.agent.config import AgentConfig
from bai.agent.session import Session
from bai.common.agent_rpc import SandboxSpec, SessionStats
from bai.common.errors import SessionDestructionFailed
from bai.runner import protocol as p

LIMITS = Limits(cpu=Decimal(1), mem=256 * 2**20, pids=64)


class FakeSandbox(Sandbox):
    """A sandbox with no process: ``runner`` is the runner's end of its socket.
    ``exited`` resolves ``wait_exit``; ``destroy_error`` makes ``destroy`` fail.
    Every one made is in ``made`` until ``close_all``."""

    made: ClassVar[list[FakeSandbox]] = []

    def __init__(self, session_id: str, destroy_error: Exception | None = None) -> None:
        self.session_id = session_id
        self.limits = LIMITS
        self._agent_end, self.runner = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.destroy_error = destroy_error
        self.destroyed = False
        FakeSandbox.made.append(self)

    @classmethod
    def close_all(cls) -> None:
        """Close both ends of every sandbox's socket (a test's teardown)."""
        for sandbox in cls.made:
            sandbox.runner.close()
            sandbox._agent_end.close()
        cls.made.clear()

    @property
    def runner_socket(self) -> socket.socket:
        return self._agent_end

    def runner_started(self) -> None:
        pass

    def oom_watch_fd(self) -> int | None:
        return None

    def drain_oom_watch(self) -> bool:
        return False

    def oom_kills(self) -> int:
        return 0

    async def wait_exit(self) -> int:
        return await self.exited

    def diagnostics(self) -> str:
        return ""

    async def stats(self) -> SessionStats:
        return SessionStats()

    async def restart(self) -> None:
        raise NotImplementedError

    async def destroy(self, grace_s: float) -> SessionStats:
        self.runner.close()
        if self.destroy_error is not None:
            raise self.destroy_error
        self.destroyed = True
        return SessionStats()

    # -- the runner's side -------------------------------------------------

    def send_frame(self, body: dict[str, Any] | bytes) -> None:
        """One frame as the runner would send it: a JSON object, or raw payload bytes."""
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.runner.sendall(p.HEADER.pack(len(payload)) + payload)

    def send(self, message: p.Message) -> None:
        self.runner.sendall(p.encode(message))

    def ready(self, protocol: Any = p.PROTOCOL_VERSION) -> None:
        """The runner's Ready, announcing ``protocol``."""
        self.send_frame({"type": "ready", "engine": "python", "language_version": "3", "protocol": protocol})

    async def receive(self) -> p.Message:
        """The next message the agent sent to this runner."""
        loop = asyncio.get_running_loop()
        self.runner.setblocking(False)
        header = await _read_exactly(loop, self.runner, p.HEADER.size)
        (size,) = p.HEADER.unpack(header)
        return p.decode(await _read_exactly(loop, self.runner, size))


async def _read_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise ConnectionError("the agent closed the runner's socket")
        data += chunk
    return data


class FakeBackend(Backend):
    """Makes FakeSandboxes; ``on_create`` is called with each (to answer Ready, or not)."""

    name = "fake"

    def __init__(self, config: AgentConfig, on_create: Callable[[FakeSandbox], None]) -> None:
        super().__init__(config)
        self.on_create = on_create
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.destroy_errors: dict[str, Exception] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def capacity(self) -> dict[str, Decimal]:
        return {"cpu": Decimal(4), "mem": Decimal(8 * 2**30)}

    def environments(self) -> list[str]:
        return ["python"]

    async def create(self, spec: SandboxSpec, limits: Limits) -> Sandbox:
        sandbox = FakeSandbox(spec.session_id, self.destroy_errors.get(spec.session_id))
        self.sandboxes[spec.session_id] = sandbox
        self.on_create(sandbox)
        return sandbox


def failing_destroy(session_id: str) -> SessionDestructionFailed:
    return SessionDestructionFailed(f"cannot remove the cgroup of {session_id}: Device or resource busy")


async def no_gone(session: Session, reason: str) -> None:
    """An ``on_gone`` for sessions made outside an Agent: the tests read ``gone_reason``."""
