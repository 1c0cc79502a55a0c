"""Session lifecycle events as server-sent events (API.md section 7):
``GET /events/session`` (v4: ``/stream/kernel/_/events``).

Filters: ``sessionName`` or ``name`` (default ``*``), ``sessionId``, and, for an
admin, ``ownerAccessKey``. Each event has a ``session_*`` name and a ``kernel_*``
twin; ``scope`` (``*``, ``session`` or ``kernel``, as the official client sends it)
picks which of the two go out. A comment line every 15 s keeps idle proxies from
closing the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from bai.common.errors import InsufficientPrivilege, InvalidRequest
from bai.common.wire import SessionEventData
from bai.manager.api.deps import caller, manager_of
from bai.manager.events import CLOSED, EventBus, SessionEvent, Subscription

KEEPALIVE_S = 15.0


SCOPES = {"*": ("session", "kernel"), "session": ("session",), "kernel": ("kernel",)}


@dataclass(frozen=True)
class EventFilter:
    access_key: str
    name: str  # "*" for any
    session_id: str | None
    families: tuple[str, ...]  # "session" and/or "kernel"

    def matches(self, event: SessionEvent) -> bool:
        return (
            event.access_key == self.access_key
            and self.name in ("*", event.session_name)
            and (self.session_id is None or event.session_id == self.session_id)
        )


def sse_records(event: SessionEvent, families: tuple[str, ...]) -> str:
    data = SessionEventData(
        reason=event.reason,
        sessionName=event.session_name,
        ownerAccessKey=event.access_key,
        sessionId=event.session_id,
        exitCode=event.exit_code,
        kernelId=event.session_id,
    ).model_dump_json()
    suffix = event.name.removeprefix("session_")
    return "".join(f"event: {family}_{suffix}\ndata: {data}\n\n" for family in families)


async def _stream(bus: EventBus, queue: Subscription, wanted: EventFilter) -> AsyncIterator[str]:
    """The response's body; it ends when the bus closes (the manager stops)."""
    try:
        yield ": connected\n\n"
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is CLOSED:
                return
            if wanted.matches(event):
                yield sse_records(event, wanted.families)
    finally:
        bus.unsubscribe(queue)


async def session_events(request: Request) -> Response:
    manager = manager_of(request)
    keypair = await caller(request)
    params = request.query_params
    owner = params.get("ownerAccessKey") or params.get("owner_access_key") or keypair.access_key
    if owner != keypair.access_key and not keypair.is_admin:
        raise InsufficientPrivilege("ownerAccessKey: only an admin keypair may watch another keypair's sessions")
    scope = params.get("scope") or "*"
    if scope not in SCOPES:
        raise InvalidRequest("scope: must be *, session or kernel", field="scope")
    wanted = EventFilter(
        access_key=owner,
        name=params.get("sessionName") or params.get("name") or "*",
        session_id=params.get("sessionId"),
        families=SCOPES[scope],
    )
    queue = manager.events.subscribe()  # before answering, so no event falls between
    return StreamingResponse(_stream(manager.events, queue, wanted), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
