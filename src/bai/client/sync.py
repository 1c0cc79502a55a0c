"""The blocking API: the async SDK run on a private event loop in a background thread.

    with Session() as api:
        sess = api.ComputeSession.get_or_create("python", name="demo")
        print(sess.execute(None, "print(6 * 7)").console)
        with sess.stream_execute("print(1)") as stream:
            for frame in stream: ...

Nothing here mirrors the async API method by method: ``Blocking`` wraps any
AsyncAPI object; a coroutine method becomes a blocking call on the loop
thread, and whatever it returns is wrapped in turn when it is an AsyncAPI
object (a compute session, a stream). ``async with`` / ``async for`` become
``with`` / ``for``. The async classes' docstrings and signatures are the
reference; results (models, strings) are the same objects.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import httpx

from bai.client.base import AsyncAPI
from bai.client.config import APIConfig
from bai.client.session import AsyncSession

T = TypeVar("T")


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

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class Blocking:
    """A blocking view of one AsyncAPI object, whose coroutines run on ``portal``."""

    def __init__(self, target: AsyncAPI, portal: LoopThread) -> None:
        self._target = target
        self._portal = portal

    def __repr__(self) -> str:
        return f"Blocking({self._target!r})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # private and protocol names (copy, pickle) are not forwarded
            raise AttributeError(name)
        attribute = getattr(self._target, name)
        if isinstance(attribute, AsyncAPI):
            return Blocking(attribute, self._portal)
        if inspect.iscoroutinefunction(attribute):
            return self._blocking(attribute)
        if callable(attribute) and not isinstance(attribute, type):
            return self._wrapping(attribute)
        return attribute

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._dunder("__call__")(*args, **kwargs))

    def __enter__(self) -> Any:
        entered = self._portal.run(self._dunder("__aenter__")())
        return self if entered is self._target else self._wrap(entered)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any:
        return self._portal.run(self._dunder("__aexit__")(exc_type, exc, tb))

    def __iter__(self) -> Blocking:
        return self

    def __next__(self) -> Any:
        try:
            return self._wrap(self._portal.run(self._dunder("__anext__")()))
        except StopAsyncIteration:
            raise StopIteration from None

    def _dunder(self, name: str) -> Any:
        method = getattr(self._target, name, None)
        if method is None:
            raise TypeError(f"{type(self._target).__name__} does not support {name}")
        return method

    def _blocking(self, coroutine_function: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        @functools.wraps(coroutine_function)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._wrap(self._portal.run(coroutine_function(*args, **kwargs)))

        return call

    def _wrapping(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._wrap(function(*args, **kwargs))

        return call

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, AsyncAPI):
            return Blocking(value, self._portal)
        if isinstance(value, list) and any(isinstance(item, AsyncAPI) for item in value):
            return [self._wrap(item) for item in value]
        return value


class Session(Blocking):
    """The blocking twin of AsyncSession (same attributes and methods, without ``await``).

    Owns its loop thread: close it, or use it as a context manager.
    """

    def __init__(self, config: APIConfig | None = None, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        resolved = config if config is not None else APIConfig.from_env()
        portal = LoopThread()
        try:
            target = portal.run(_open(resolved, transport))
        except BaseException:
            portal.stop()
            raise
        super().__init__(target, portal)
        self._closed = False

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._portal.run(self._dunder("close")())
        finally:
            self._portal.stop()


async def _open(config: APIConfig, transport: httpx.AsyncBaseTransport | None) -> AsyncSession:
    # Built on the loop thread, so that the HTTP client belongs to the loop that drives it.
    return AsyncSession(config, transport=transport)
