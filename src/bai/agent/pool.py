"""The warm pool: ready sandboxes per environment, claimed by sessions in milliseconds.

A pooled sandbox is started for no session (its cgroup and scratch dir are named
``_pool-<random>``, a name no session id can take, and unique on the host: two agents
with one agent id, e.g. two embedded servers, share the cgroup parent), with the agent's default limits and no
environment variables; it is ready once its runner sent Ready (the REPL is forked by
then). ``Agent.create_session`` claims one: the backend sets the session's limits on
its cgroup (``Sandbox.claim``) and the runner sets the session's variables
(``Configure``). The working dir /home/work is the sandbox's own fresh scratch dir.
A sandbox leaves the pool once, for one session, and is destroyed with it.

``PoolBook`` is the I/O-free core: it is told what happened (a start was launched,
succeeded, failed; a sandbox was claimed or died) and answers what to do (how many
starts to launch, which sandbox to hand out). ``WarmPool`` is the async shell that
starts and destroys sandboxes. Refills run in the background, never on a request's
path. The pool empties itself while the host's available memory is under
``AgentConfig.pool_min_available_mem`` and refills when it is back.
Callers: Agent only (start, claim, stop, counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bai.agent.backends.base import Backend
from bai.agent.cgroups import Limits
from bai.agent.session import GoneCallback, Session
from bai.common.agent_rpc import SandboxSpec
from bai.common.errors import BaiError

log = logging.getLogger(__name__)

NAME_PREFIX = "_pool-"  # SESSION_ID_RE makes a session id start with a letter or digit
MAX_RETRY_DELAY_S = 30.0
# A claim's refill waits this long: its synchronous set-up (cgroup dirs, scratch dir,
# the fork) would otherwise run on the event loop between the claim and the answer to
# the create request (the manager's status write and HTTP response, embedded or not).
REFILL_DELAY_S = 0.05
MEMORY_CHECK_INTERVAL_S = 2.0


def available_memory() -> int:
    """MemAvailable of /proc/meminfo, bytes (0 when it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def startup_variables(environ: dict[str, str]) -> list[str]:
    """The variables of ``environ`` that a running interpreter reads only at its start
    (PYTHON*: sys.path, hash seed, stdio...; LANG and LC_*: the locale). A pooled
    REPL started without them cannot honour them, so such a session starts cold."""
    return sorted(name for name in environ if name.startswith(("PYTHON", "LC_")) or name == "LANG")


@dataclass
class _Shelf:
    """One environment's share of the pool."""

    target: int
    ready: deque[str] = field(default_factory=deque)  # oldest first
    starting: int = 0
    failures: int = 0  # consecutive failed starts


class PoolBook:
    """The pool's bookkeeping, without I/O: names of ready sandboxes per environment.

    Invariants: a name is handed out by ``claim`` at most once; a name given to
    ``started`` is either ready, claimed or dropped, never two of them; ``wanted``
    never asks for more than ``target - ready - starting`` starts.
    """

    def __init__(self, targets: dict[str, int]) -> None:
        self._shelves = {env: _Shelf(target) for env, target in targets.items() if target > 0}
        self._where: dict[str, str] = {}  # ready name → environment
        self.stopped = False
        self.pressure = False  # the host is short of memory: hold nothing ready

    def serves(self, environment: str) -> bool:
        return environment in self._shelves and not self.stopped

    def wanted(self, environment: str) -> int:
        """How many starts to launch now for ``environment`` (each then ``launched``)."""
        shelf = self._shelves.get(environment)
        if shelf is None or self.stopped or self.pressure:
            return 0
        return max(0, shelf.target - len(shelf.ready) - shelf.starting)

    def launched(self, environment: str) -> None:
        self._shelves[environment].starting += 1

    def started(self, environment: str, name: str) -> bool:
        """A launched start succeeded. False: the pool was stopped, or the host came under
        memory pressure, meanwhile (destroy it)."""
        shelf = self._shelves[environment]
        shelf.starting -= 1
        shelf.failures = 0
        if self.stopped or self.pressure:
            return False
        shelf.ready.append(name)
        self._where[name] = environment
        return True

    def start_failed(self, environment: str) -> float:
        """A launched start failed: the delay in seconds before trying again."""
        shelf = self._shelves[environment]
        shelf.starting -= 1
        shelf.failures += 1
        return float(min(MAX_RETRY_DELAY_S, 0.1 * 2.0 ** (shelf.failures - 1)))

    def claim(self, environment: str) -> str | None:
        """The oldest ready sandbox of ``environment``, now out of the pool, or None."""
        shelf = self._shelves.get(environment)
        if shelf is None or self.stopped or not shelf.ready:
            return None
        name = shelf.ready.popleft()
        del self._where[name]
        return name

    def dropped(self, name: str) -> str | None:
        """A ready sandbox died while idle: its environment (to refill), or None when
        it was no longer in the pool."""
        environment = self._where.pop(name, None)
        if environment is not None:
            self._shelves[environment].ready.remove(name)
        return environment

    def memory_pressure(self, under_pressure: bool) -> list[str]:
        """The host's memory state changed (or was read again). Under pressure the pool
        shrinks to nothing: the names returned are to destroy, and ``wanted`` asks for
        no start until the pressure is gone."""
        self.pressure = under_pressure
        if not under_pressure:
            return []
        return self._take_all()

    def stop(self) -> list[str]:
        """No more claims or starts: the names of every ready sandbox, to destroy."""
        self.stopped = True
        return self._take_all()

    def _take_all(self) -> list[str]:
        names = list(self._where)
        self._where.clear()
        for shelf in self._shelves.values():
            shelf.ready.clear()
        return names

    def counts(self) -> dict[str, int]:
        """Ready sandboxes per environment (for AgentInfo.pool)."""
        return {env: len(shelf.ready) for env, shelf in self._shelves.items()}


SessionFactory = Callable[[SandboxSpec, Any, GoneCallback], Session]


class WarmPool:
    """The async shell around PoolBook: starts, hands out and destroys pooled sandboxes."""

    def __init__(
        self,
        backend: Backend,
        targets: dict[str, int],
        limits: Limits,
        make_session: SessionFactory,
        startup_timeout_s: float,
        min_available_mem: int = 0,
        read_available_mem: Callable[[], int] = available_memory,
    ) -> None:
        self.backend = backend
        self.min_available_mem = min_available_mem  # below it, the pool holds nothing (0: never)
        self.read_available_mem = read_available_mem
        self.book = PoolBook(targets)
        self.limits = limits
        self.make_session = make_session
        self.startup_timeout_s = startup_timeout_s
        self._sessions: dict[str, Session] = {}  # ready ones, by pool name
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    def counts(self) -> dict[str, int]:
        return self.book.counts()

    def serves(self, environment: str) -> bool:
        return self.book.serves(environment)

    def refill(self, environment: str, delay_s: float = 0.0) -> None:
        """Launch the starts the book wants, in the background."""
        for _ in range(self.book.wanted(environment)):
            self.book.launched(environment)
            self._spawn(self._start_one(environment, delay_s))

    def refill_all(self) -> None:
        for environment in self.book.counts():
            self.refill(environment)

    def start(self) -> None:
        """Fill the pool, and watch the host's memory while it runs. Called by Agent.start."""
        if self.min_available_mem > 0:
            self.check_memory()
            self._spawn(self._watch_memory())
        self.refill_all()

    def check_memory(self) -> None:
        """Shrink the pool to nothing while the host's available memory is under
        ``min_available_mem``; refill it once it is back."""
        available = self.read_available_mem()
        under = available < self.min_available_mem
        was_under = self.book.pressure
        for name in self.book.memory_pressure(under):
            session = self._sessions.pop(name, None)
            if session is not None:
                self._spawn(self._destroy(session))
        if under and not was_under:
            log.warning("pool: %d bytes of memory available, under %d: the pool is emptied",
                        available, self.min_available_mem)
        elif was_under and not under:
            log.info("pool: memory available again, refilling")
            self.refill_all()

    def claim(self, environment: str) -> Session | None:
        """A ready session of ``environment``, out of the pool (a refill is launched), or None."""
        name = self.book.claim(environment)
        if name is None:
            return None
        self.refill(environment, REFILL_DELAY_S)
        return self._sessions.pop(name)

    async def stop(self) -> None:
        """Destroy every pooled sandbox and wait for the starts in flight."""
        names = self.book.stop()
        self._stopping.set()  # wakes the starts waiting to retry; the others end soon
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        sessions = [self._sessions.pop(name) for name in names if name in self._sessions]
        await asyncio.gather(*(self._destroy(s) for s in sessions), return_exceptions=True)

    # -- background work ---------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_memory(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MEMORY_CHECK_INTERVAL_S):
                    await self._stopping.wait()
            if not self._stopping.is_set():
                self.check_memory()

    async def _start_one(self, environment: str, delay_s: float) -> None:
        if delay_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._stopping.wait()
        if self.book.stopped:
            self.book.start_failed(environment)
            return
        name = f"{NAME_PREFIX}{secrets.token_hex(6)}"
        spec = SandboxSpec(session_id=name, session_name=name, environment=environment, resources={})
        try:
            session = await self._connect(spec)
        except Exception as exc:  # a background task: log it, retry later
            delay = self.book.start_failed(environment)
            log.warning("pool: cannot start a %s sandbox (retrying in %.1f s): %s", environment, delay, exc)
            self.refill(environment, delay)
            return
        if not self.book.started(environment, name):
            await self._destroy(session)
            return
        self._sessions[name] = session

    async def _connect(self, spec: SandboxSpec) -> Session:
        sandbox = await self.backend.create(spec, self.limits)
        session = self.make_session(spec, sandbox, self._idle_gone)
        try:
            await session.connect(self.startup_timeout_s)
        except BaseException:
            session.closing = True
            session.detach()
            await sandbox.destroy(grace_s=0)
            raise
        session.watch_oom()
        return session

    async def _idle_gone(self, session: Session, reason: str) -> None:
        """A pooled sandbox died before anyone claimed it: drop it and start another."""
        environment = self.book.dropped(session.session_id)
        if environment is None:
            return  # it failed to start: _start_one destroys it and retries
        self._sessions.pop(session.session_id, None)
        log.warning("pool: the idle sandbox %s died: %s", session.session_id, reason)
        await self._destroy(session)
        self.refill(environment)

    @staticmethod
    async def _destroy(session: Session) -> None:
        session.closing = True
        session.detach()
        session.unwatch_oom()
        try:
            await session.sandbox.destroy(grace_s=0)
        except BaiError as exc:  # what it could not release (a cgroup, a mount) is left behind
            log.error("pool: the sandbox %s was not destroyed: %s", session.session_id, exc)
