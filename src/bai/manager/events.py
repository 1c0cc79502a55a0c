"""The event bus: session lifecycle events, in process. Subscribers get an
asyncio queue; a slow subscriber loses its oldest events rather than growing
the manager's memory."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SessionEvent:
    name: str  # session_enqueued, session_started, session_terminated, ...
    session_id: str
    session_name: str
    access_key: str
    reason: str = ""
    exit_code: int | None = None


@dataclass
class EventBus:
    queue_size: int = 1024
    _subscribers: set[asyncio.Queue[SessionEvent]] = field(default_factory=set)

    def publish(self, event: SessionEvent) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[SessionEvent]:
        queue: asyncio.Queue[SessionEvent] = asyncio.Queue(self.queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[SessionEvent]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
