"""The event bus: session lifecycle events, in process. Subscribers get an
asyncio queue; a slow subscriber loses its oldest events rather than growing
the manager's memory.

``close`` (at the manager's stop) ends every subscription: each queue gets the
``CLOSED`` marker, after which its reader must stop (the SSE route ends its
response, so a stop never waits on a connected ``bai events``), and later
``subscribe`` calls get a queue that holds only the marker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True)
class SessionEvent:
    name: str  # session_enqueued, session_started, session_terminated, ...
    session_id: str
    session_name: str
    access_key: str
    reason: str = ""
    exit_code: int | None = None


CLOSED: Final = None  # the marker a subscription's last item is: the bus has closed
Subscription = asyncio.Queue[SessionEvent | None]


@dataclass
class EventBus:
    queue_size: int = 1024
    _subscribers: set[Subscription] = field(default_factory=set)
    _closed: bool = False

    def publish(self, event: SessionEvent) -> None:
        for queue in self._subscribers:
            _put_dropping_oldest(queue, event)

    def subscribe(self) -> Subscription:
        queue: Subscription = asyncio.Queue(self.queue_size)
        if self._closed:
            queue.put_nowait(CLOSED)
        else:
            self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: Subscription) -> None:
        self._subscribers.discard(queue)

    def close(self) -> None:
        """End every subscription (idempotent)."""
        self._closed = True
        for queue in self._subscribers:
            _put_dropping_oldest(queue, CLOSED)
        self._subscribers.clear()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


def _put_dropping_oldest(queue: Subscription, item: SessionEvent | None) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
