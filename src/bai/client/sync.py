"""The blocking API: the async SDK run on a private event loop in a background thread.

    with Session() as api:
        sess = api.ComputeSession.get_or_create("python", name="demo")
        print(sess.run("print(6 * 7)").stdout)
        with sess.stream_execute("print(1)") as stream:
            for frame in stream: ...

Async once, thinly wrapped: each class here is the blocking twin of one async class
(``Session`` of AsyncSession, ``ComputeSession`` of AsyncComputeSession, and the
factory, admin and stream classes of the same names). A twin's method has its async
method's parameters and types, and a body of one line that runs the coroutine on the
loop thread and wraps an async API object it returns in its twin; ``async with`` /
``async for`` become ``with`` / ``for``. ``twin_of`` copies the async method's docstring
onto its twin, so that ``help()`` reads the same; tests/unit/test_client_sdk.py checks
that every public async method has its twin with the same parameters, so they cannot
drift. Results (models, strings) are the async API's own objects.

Callbacks given to the API (``on_output``, ``stdin``, ``progress``) run on the loop
thread: they must not call back into the blocking API, which would wait on itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import httpx

from bai.client import files as transfer
from bai.client import runs
from bai.client.admin import AdminAPI as AsyncAdminAPI
from bai.client.auth import Clock, RequestSigner, utc_now
from bai.client.base import AsyncAPI
from bai.client.compute import AsyncComputeSession, ResourceValue
from bai.client.compute import ComputeSessionFactory as AsyncComputeSessionFactory
from bai.client.config import APIConfig
from bai.client.models import (
    AuthTestResult,
    CompletionResult,
    FileList,
    ServerVersion,
    SessionEvent,
    SessionStats,
    StreamFrame,
)
from bai.client.session import Answer, AsyncSession
from bai.client.stream import ExecutionStream as AsyncExecutionStream
from bai.client.stream import TerminalStream as AsyncTerminalStream
from bai.common.wire import (
    AgentStatus,
    EnvironmentOffer,
    ExecMode,
    KeypairCreated,
    KeypairInfo,
    ResourcePolicyInfo,
    RunResult,
    SessionInfo,
)

T = TypeVar("T")
Target = TypeVar("Target", bound=AsyncAPI)
Twin = TypeVar("Twin", bound=type)

#: Each async API class and its blocking twin (filled by ``twin_of``; read by the parity test).
TWINS: dict[type[AsyncAPI], type[BlockingAPI[Any]]] = {}
#: Public async methods without a twin, and why: the transport the API objects share,
#: whose values (unsent requests, open sockets) only mean something on the loop thread.
ASYNC_ONLY: dict[type[AsyncAPI], frozenset[str]] = {
    AsyncSession: frozenset({"send", "build_request", "open_websocket", "websocket_url"}),
}


class LoopThread:
    """An event loop running forever in a daemon thread; ``run`` blocks on one coroutine there."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bai-client-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C in the calling thread: do not leave the work running behind its back.
            future.cancel()
            raise

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        """The items of an async iterator, each fetched on the loop; leaving the ``for``
        early (or closing this generator) closes an async generator there too."""
        try:
            while True:
                try:
                    yield self.run(_next_of(items))
                except StopAsyncIteration:
                    return
        finally:
            if isinstance(items, AsyncGenerator) and not self._loop.is_closed():
                self.run(items.aclose())

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _next_of(items: AsyncIterator[T]) -> T:
    return await anext(items)


class BlockingAPI(Generic[Target]):
    """A blocking view of one async API object, whose coroutines run on ``portal``."""

    def __init__(self, target: Target, portal: LoopThread) -> None:
        self._target = target
        self._portal = portal

    def __repr__(self) -> str:
        return f"Blocking({self._target!r})"


def twin_of(async_class: type[AsyncAPI]) -> Callable[[Twin], Twin]:
    """Register the decorated class as ``async_class``'s blocking twin, and give each of
    its methods that has no docstring of its own the async method's."""

    def register(twin: Twin) -> Twin:
        for name, member in vars(twin).items():
            original = getattr(async_class, name, None)
            if callable(member) and member.__doc__ is None and original is not None:
                member.__doc__ = original.__doc__
            if isinstance(member, property) and member.__doc__ is None and isinstance(original, property):
                setattr(twin, name, property(member.fget, member.fset, member.fdel, original.__doc__))
        TWINS[async_class] = twin
        return twin

    return register


@twin_of(AsyncExecutionStream)
class ExecutionStream(BlockingAPI[AsyncExecutionStream]):
    """The frames of one streamed run: ``with sess.stream_execute(code) as stream: for frame in stream``."""

    @property
    def finished(self) -> bool:
        return self._target.finished

    def __enter__(self) -> ExecutionStream:
        self._portal.run(self._target.__aenter__())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._portal.run(self._target.__aexit__(exc_type, exc, tb))

    def __iter__(self) -> ExecutionStream:
        return self

    def __next__(self) -> StreamFrame:
        try:
            return self._portal.run(self._target.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def send_input(self, text: str) -> None:
        self._portal.run(self._target.send_input(text))

    def close(self) -> None:
        self._portal.run(self._target.close())


@twin_of(AsyncTerminalStream)
class TerminalStream(BlockingAPI[AsyncTerminalStream]):
    """An interactive shell in a session: ``with sess.terminal() as term``."""

    @property
    def exit_code(self) -> int | None:
        """The shell's exit code, once ``read`` has returned None (None: the connection ended first)."""
        return self._target.exit_code

    def __enter__(self) -> TerminalStream:
        self._portal.run(self._target.__aenter__())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._portal.run(self._target.__aexit__(exc_type, exc, tb))

    def read(self) -> bytes | None:
        return self._portal.run(self._target.read())

    def send(self, data: bytes) -> None:
        self._portal.run(self._target.send(data))

    def resize(self, rows: int, cols: int) -> None:
        self._portal.run(self._target.resize(rows, cols))

    def restart(self) -> None:
        self._portal.run(self._target.restart())

    def close(self) -> None:
        self._portal.run(self._target.close())


@twin_of(AsyncComputeSession)
class ComputeSession(BlockingAPI[AsyncComputeSession]):
    """One compute session, addressed by its UUID when known, else by its name.

    Building one does no I/O: ``api.ComputeSession("demo")`` only names it; the
    first call that needs it finds out whether it exists (SessionNotFound).
    """

    def __repr__(self) -> str:
        return repr(self._target)

    @property
    def name(self) -> str:
        """The session's name (the name or UUID it was addressed by, until an answer names it)."""
        return self._target.name

    @property
    def id(self) -> str | None:
        """The session's UUID, once an answer gave it."""
        return self._target.id

    @property
    def status(self) -> str | None:
        """The status the last answer reported (create or info)."""
        return self._target.status

    @property
    def created(self) -> bool | None:
        """Whether get_or_create made a new session (False: an existing one was reused)."""
        return self._target.created

    @property
    def path(self) -> str:
        return self._target.path

    def info(self) -> SessionInfo:
        return self._portal.run(self._target.info())

    def execute(
        self,
        run_id: str | None = None,
        code: str = "",
        mode: ExecMode = "query",
        opts: Mapping[str, Any] | None = None,
    ) -> RunResult:
        return self._portal.run(self._target.execute(run_id, code, mode, opts))

    def run(
        self,
        code: str = "",
        *,
        mode: Literal["query", "batch"] = "query",
        opts: Mapping[str, Any] | None = None,
        stdin: runs.Stdin | None = None,
        on_output: runs.OutputCallback | None = None,
    ) -> runs.RunOutput:
        return self._portal.run(self._target.run(code, mode=mode, opts=opts, stdin=stdin, on_output=on_output))

    def stream_execute(
        self, code: str = "", mode: Literal["query", "batch"] = "query", opts: Mapping[str, Any] | None = None
    ) -> ExecutionStream:
        return ExecutionStream(self._target.stream_execute(code, mode, opts), self._portal)

    def terminal(self, rows: int = 24, cols: int = 80) -> TerminalStream:
        return TerminalStream(self._target.terminal(rows, cols), self._portal)

    def interrupt(self) -> None:
        self._portal.run(self._target.interrupt())

    def complete(self, code: str, opts: Mapping[str, Any] | None = None) -> CompletionResult:
        return self._portal.run(self._target.complete(code, opts))

    def restart(self) -> None:
        self._portal.run(self._target.restart())

    def upload(
        self, files: Sequence[str | Path], basedir: str | Path | None = None, *,
        progress: transfer.Progress | None = None,
    ) -> list[str]:  # fmt: skip
        return self._portal.run(self._target.upload(files, basedir, progress=progress))

    def download(
        self, files: Sequence[str], dest: str | Path = ".", *, progress: transfer.Progress | None = None
    ) -> transfer.Extracted:
        return self._portal.run(self._target.download(files, dest, progress=progress))

    def list_files(self, path: str = ".") -> FileList:
        return self._portal.run(self._target.list_files(path))

    def destroy(self) -> SessionStats:
        return self._portal.run(self._target.destroy())


@twin_of(AsyncComputeSessionFactory)
class ComputeSessionFactory(BlockingAPI[AsyncComputeSessionFactory]):
    """``api.ComputeSession``: call it with a name or UUID, or ``get_or_create`` a session."""

    def __call__(self, name_or_id: str) -> ComputeSession:
        return ComputeSession(self._target(name_or_id), self._portal)

    def get_or_create(
        self,
        image: str,
        *,
        name: str | None = None,
        type_: Literal["interactive", "batch"] = "interactive",
        enqueue_only: bool = False,
        max_wait: int = 0,
        no_reuse: bool = False,
        envs: Mapping[str, str] | None = None,
        resources: Mapping[str, ResourceValue] | None = None,
        tag: str | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> ComputeSession:
        created = self._target.get_or_create(
            image, name=name, type_=type_, enqueue_only=enqueue_only, max_wait=max_wait, no_reuse=no_reuse,
            envs=envs, resources=resources, tag=tag, limits=limits,
        )  # fmt: skip
        return ComputeSession(self._portal.run(created), self._portal)


@twin_of(AsyncAdminAPI)
class AdminAPI(BlockingAPI[AsyncAdminAPI]):
    """``api.Admin`` (admin keypairs only): keypairs, resource policies, agents."""

    def list_agents(self) -> list[AgentStatus]:
        return self._portal.run(self._target.list_agents())

    def list_keypairs(self) -> list[KeypairInfo]:
        return self._portal.run(self._target.list_keypairs())

    def create_keypair(
        self,
        *,
        user_id: str = "user",
        is_admin: bool = False,
        concurrency_limit: int = 30,
        rate_limit: int = 10000,
        expires_at: datetime | None = None,
        resource_policy: str = "default",
    ) -> KeypairCreated:
        return self._portal.run(self._target.create_keypair(
            user_id=user_id, is_admin=is_admin, concurrency_limit=concurrency_limit, rate_limit=rate_limit,
            expires_at=expires_at, resource_policy=resource_policy,
        ))  # fmt: skip

    def deactivate_keypair(self, access_key: str) -> KeypairInfo:
        return self._portal.run(self._target.deactivate_keypair(access_key))

    def activate_keypair(self, access_key: str) -> KeypairInfo:
        return self._portal.run(self._target.activate_keypair(access_key))

    def delete_keypair(self, access_key: str) -> None:
        self._portal.run(self._target.delete_keypair(access_key))

    def set_keypair_policy(self, access_key: str, policy: str) -> KeypairInfo:
        return self._portal.run(self._target.set_keypair_policy(access_key, policy))

    def list_policies(self) -> list[ResourcePolicyInfo]:
        return self._portal.run(self._target.list_policies())

    def create_policy(self, name: str, **limits: Any) -> ResourcePolicyInfo:
        return self._portal.run(self._target.create_policy(name, **limits))

    def update_policy(self, name: str, **changes: Any) -> ResourcePolicyInfo:
        return self._portal.run(self._target.update_policy(name, **changes))

    def delete_policy(self, name: str) -> None:
        self._portal.run(self._target.delete_policy(name))


@twin_of(AsyncSession)
class Session(BlockingAPI[AsyncSession]):
    """The blocking twin of AsyncSession: a connection to one manager with one keypair.

    ``ComputeSession`` creates or addresses compute sessions, ``Admin`` administers.
    Owns its loop thread: close it, or use it as a context manager.
    """

    def __init__(
        self,
        config: APIConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = utc_now,
    ) -> None:
        portal = LoopThread()
        try:
            # built on the loop thread, so that the HTTP client belongs to the loop that drives it
            target = portal.run(_open(config, transport, clock))
        except BaseException:
            portal.stop()
            raise
        super().__init__(target, portal)
        self.ComputeSession = ComputeSessionFactory(target.ComputeSession, portal)
        self.Admin = AdminAPI(target.Admin, portal)
        self._closed = False

    @property
    def config(self) -> APIConfig:
        return self._target.config

    @property
    def signer(self) -> RequestSigner:
        return self._target.signer

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the loop thread; a second close does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._portal.run(self._target.close())
        finally:
            self._portal.stop()

    def server_version(self) -> ServerVersion:
        return self._portal.run(self._target.server_version())

    def auth_test(self, echo: str) -> AuthTestResult:
        return self._portal.run(self._target.auth_test(echo))

    def list_environments(self) -> list[EnvironmentOffer]:
        return self._portal.run(self._target.list_environments())

    def list_sessions(self, *, all_: bool = False) -> list[SessionInfo]:
        return self._portal.run(self._target.list_sessions(all_=all_))

    def session_events(
        self, *, name: str | None = None, session_id: str | None = None, scope: str = "session",
        on_connected: Callable[[], None] | None = None,
    ) -> Iterator[SessionEvent]:  # fmt: skip
        events = self._target.session_events(name=name, session_id=session_id, scope=scope, on_connected=on_connected)
        return self._portal.iterate(events)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        return self._portal.run(self._target.request(method, path, json=json, params=params))

    def request_model(
        self,
        model: type[Answer],
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Answer:
        return self._portal.run(self._target.request_model(model, method, path, json=json, params=params))


async def _open(config: APIConfig | None, transport: httpx.AsyncBaseTransport | None, clock: Clock) -> AsyncSession:
    return AsyncSession(config, transport=transport, clock=clock)
