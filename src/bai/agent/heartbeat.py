"""The agent → manager direction: registration heartbeats and "session gone" reports.

``ManagerClient`` posts the reports declared in bai.common.agent_calls, with the
cluster secret header: ``AgentInfo`` (``HEARTBEAT``: the first one registers the
agent; the manager marks it lost when they stop) and ``SessionGone`` (``SESSION_GONE``).
``Heartbeat`` sends the former every ``heartbeat_interval_s``, first at once.
Network errors are logged and retried, never raised into the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import httpx
from pydantic import BaseModel

from bai.common.agent_calls import HEARTBEAT, SECRET_HEADER, SESSION_GONE, Report
from bai.common.agent_rpc import AgentInfo, SessionGone

log = logging.getLogger(__name__)

GONE_RETRIES = (0.5, 1.0, 2.0, 4.0)  # pauses between attempts to report a dead session


class ManagerUnreachable(Exception):
    """The manager did not take a report (network error or a non-2xx answer)."""


class ManagerClient:
    def __init__(self, manager_url: str, secret: str, client: httpx.AsyncClient | None = None) -> None:
        self.base = manager_url.rstrip("/")
        self._headers = {SECRET_HEADER: secret}
        self._client = client or httpx.AsyncClient(timeout=10.0)
        self._owns_client = client is None

    async def _post(self, report: Report[BaseModel], body: BaseModel) -> None:
        path = report.path
        try:
            response = await self._client.post(
                self.base + path,
                content=body.model_dump_json(),
                headers={**self._headers, "Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise ManagerUnreachable(f"{path}: {exc}") from exc
        if response.status_code >= 300:
            raise ManagerUnreachable(f"{path}: {response.status_code} {response.text[:200]}")

    async def heartbeat(self, info: AgentInfo) -> None:
        await self._post(HEARTBEAT, info)

    async def session_gone(self, gone: SessionGone) -> None:
        """Report a dead session, retrying a few times; gives up with a log line."""
        for pause in (*GONE_RETRIES, None):
            try:
                await self._post(SESSION_GONE, gone)
                return
            except ManagerUnreachable as exc:
                if pause is None:
                    log.error("could not report session %s gone: %s", gone.session_id, exc)
                    return
                log.warning("reporting session %s gone: %s; retrying", gone.session_id, exc)
                await asyncio.sleep(pause)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


class Heartbeat:
    """Posts ``info()`` every ``interval_s`` until stopped."""

    def __init__(self, client: ManagerClient, info: Callable[[], AgentInfo], interval_s: float) -> None:
        self.client = client
        self.info = info
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.client.heartbeat(self.info())
            except ManagerUnreachable as exc:
                log.warning("heartbeat: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
