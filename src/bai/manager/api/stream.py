"""The streaming execute WebSocket (API.md section 6): one run per connection,
output pushed about every ``stream_flush_s``; a client that goes away
interrupts its run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bai.common.agent_rpc import ExecRequest
from bai.common.errors import BaiError, InvalidRequest
from bai.common.status import RunStatus
from bai.common.wire import ExecuteRequest, RunResult
from bai.manager.api.deps import live_session, manager_of, validate
from bai.manager.api.execute import exec_request
from bai.manager.api.problems import problem_for
from bai.manager.core import Manager
from bai.manager.sessions import LiveSession

log = logging.getLogger(__name__)


async def _deny(ws: WebSocket, exc: BaiError) -> None:
    """Refuse the upgrade with the problem's HTTP status where the server supports it."""
    try:
        await ws.send_denial_response(problem_for(exc))
    except RuntimeError:
        await ws.close(code=1008, reason=exc.message[:120])


async def _first_request(inbox: _Inbox, session: LiveSession, flush_s: float) -> ExecRequest:
    text = await inbox.next_text()
    try:
        data = json.loads(text)
    except ValueError:
        raise InvalidRequest("the first frame must be a JSON object {code, mode, options}") from None
    req = validate(ExecuteRequest, data if isinstance(data, dict) else None)
    if req.mode not in ("query", "batch"):
        raise InvalidRequest("mode: must be query or batch", field="mode")
    return exec_request(session, req, flush_s)


class _Inbox:
    """Reads the client's frames in the background, so that a client that goes
    away is noticed while its run is silent, not only at the next send."""

    def __init__(self, ws: WebSocket) -> None:
        self.frames: asyncio.Queue[str | None] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._read(ws))

    async def _read(self, ws: WebSocket) -> None:
        try:
            while True:
                await self.frames.put(await ws.receive_text())
        except (WebSocketDisconnect, RuntimeError):
            await self.frames.put(None)

    @property
    def gone(self) -> bool:
        return self._task.done()

    async def next_text(self) -> str:
        text = await self.frames.get()
        if text is None:
            raise WebSocketDisconnect(1001)
        return text

    def close(self) -> None:
        self._task.cancel()


async def _relay(ws: WebSocket, inbox: _Inbox, manager: Manager, session: LiveSession,
                 first: ExecRequest) -> None:
    request = first
    while True:
        result: RunResult = await manager.sessions.execute(session, request)
        if inbox.gone:
            raise WebSocketDisconnect(1001)
        if result.console or result.status != RunStatus.CONTINUED:
            await ws.send_text(result.model_dump_json(exclude={"run_id"}))
        if result.status == RunStatus.WAITING_INPUT:
            text = await inbox.next_text()
            request = ExecRequest(session_id=session.id, mode="input", run_id=result.run_id, code=text,
                                  flush_timeout_s=first.flush_timeout_s)
        elif result.status.goes_on:
            request = ExecRequest(session_id=session.id, mode="continue", run_id=result.run_id,
                                  flush_timeout_s=first.flush_timeout_s)
        else:
            return


async def stream_execute(ws: WebSocket) -> None:
    manager = manager_of(ws)
    try:
        session = await live_session(ws)
    except BaiError as exc:
        await _deny(ws, exc)
        return
    await ws.accept()
    with manager.sessions.in_use(session):  # an open stream keeps its session from idling out
        await _serve(ws, manager, session)


async def _serve(ws: WebSocket, manager: Manager, session: LiveSession) -> None:
    inbox = _Inbox(ws)
    try:
        first = await _first_request(inbox, session, manager.config.stream_flush_s)
        await _relay(ws, inbox, manager, session, first)
    except WebSocketDisconnect:
        with contextlib.suppress(BaiError):
            await manager.sessions.interrupt(session)
        return
    except BaiError as exc:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.send_text(json.dumps({"status": "error", "msg": exc.message}))
    finally:
        inbox.close()
    if ws.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.close()
