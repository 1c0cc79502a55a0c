"""``Manager``: the manager's parts wired together, started and stopped as one.
Built by ``bai.server`` (embedded) or a standalone manager command, then handed to
``bai.manager.api.app.create_app``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from bai.common.agent_rpc import AgentInfo
from bai.common.errors import BaiError, InvalidRequest
from bai.manager.agent_http import HttpAgentClient
from bai.manager.agents import AgentRegistry
from bai.manager.clock import Clock
from bai.manager.config import ManagerConfig
from bai.manager.events import EventBus
from bai.manager.keypairs import Keypair, KeypairRegistry
from bai.manager.policies import DEFAULT_POLICY, PolicyRegistry, ResourcePolicy
from bai.manager.ratelimit import RateLimiter
from bai.manager.sessions import SessionRegistry
from bai.manager.store.db import Database

log = logging.getLogger(__name__)


class Manager:
    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        #: the one clock of every part that asks the time (bai.manager.clock)
        self.clock = Clock()
        self.db = Database(config.resolved_database_url())
        self.keypairs = KeypairRegistry(self.db, self.clock)
        self.policies = PolicyRegistry(self.db)
        self.agents = AgentRegistry(config.agent_lost_after_s)
        self.events = EventBus()
        self.sessions = SessionRegistry(config, self.db, self.agents, self.events, self.clock)
        self.rate_limiter = RateLimiter(config.rate_limit_window_s)
        self._monitor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        if config.cluster_secret:
            secret = config.cluster_secret
            self.agents.register_client_factory("http", lambda info: HttpAgentClient(info, secret))

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.db.migrate()
        await self.keypairs.load()
        await self.policies.load()
        await self.sessions.recover()
        self._monitor = asyncio.get_running_loop().create_task(self._watch_agents())

    async def begin_stop(self) -> None:
        """The stop's first step, before the HTTP server drains its requests: the agents
        are no longer watched (none is lost while the stop runs) and the sessions stop
        (``SessionRegistry.begin_stop``: nothing waits on them any more). Idempotent."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        await self.sessions.begin_stop()

    async def stop(self) -> None:
        """Destroy (or, with ``keep_sessions``, leave) the sessions and close the agents'
        clients and the store; begins the stop if ``begin_stop`` has not."""
        await self.begin_stop()
        for task in list(self._tasks):
            task.cancel()
        await self.sessions.shutdown(keep_sessions=self.config.keep_sessions)
        await self.agents.close()
        await self.db.close()

    async def ensure_admin_keypair(self) -> tuple[Keypair, bool]:
        """The first admin keypair, created on first start; returns it and whether it is new."""
        admins = [k for k in self.keypairs.all() if k.is_admin and k.is_active]
        if admins:
            return admins[0], False
        keypair = await self.keypairs.create(
            user_id="admin",
            is_admin=True,
            concurrency_limit=self.config.default_concurrency_limit,
            rate_limit=self.config.default_rate_limit,
        )
        return keypair, True

    # -- resource policies: the checks that span keypairs and policies -----------------

    def keypairs_on(self, policy: str) -> list[Keypair]:
        return [k for k in self.keypairs.all() if k.resource_policy == policy]

    async def set_keypair_policy(self, access_key: str, policy: str) -> Keypair:
        self.policies.named_by(policy, "resource_policy")
        return await self.keypairs.set_policy(access_key, policy)

    async def delete_policy(self, name: str) -> None:
        """Delete a resource policy no keypair uses; "default" stays (new keypairs get it)."""
        policy: ResourcePolicy = self.policies.require(name)
        if policy.name == DEFAULT_POLICY:
            raise InvalidRequest('name: the "default" resource policy cannot be deleted', field="name")
        users = self.keypairs_on(name)
        if users:
            listed = ", ".join(k.access_key for k in users[:5]) + (", ..." if len(users) > 5 else "")
            raise InvalidRequest(
                f"name: resource policy {name!r} is in use by {len(users)} keypair(s) ({listed}); "
                "move them to another policy first",
                field="name",
            )
        await self.policies.delete(name)

    def agent_heartbeat(self, info: AgentInfo) -> None:
        _, joined, restarted = self.agents.heartbeat(info)
        if joined:
            log.info("agent %s joined (%s)", info.agent_id, info.rpc_url)
            self.sessions.agent_joined()
        if restarted:
            log.warning("agent %s restarted", info.agent_id)
        self.sessions.agent_reported(info.agent_id, info.sessions, restarted)
        orphans = self.sessions.orphans(info.agent_id, info.sessions)
        if orphans:
            self._spawn(self._destroy_orphans(info.agent_id, orphans))

    async def _destroy_orphans(self, agent_id: str, session_ids: list[str]) -> None:
        """Sandboxes an agent runs for sessions this manager does not know as live (it
        restarted, or the session ended while the agent was unreachable): stop them, so
        they hold no resources and run no code that nobody can reach."""
        agent = self.agents.client(agent_id)
        for session_id in session_ids:
            log.warning("agent %s runs session %s, which is not live here: destroying it", agent_id, session_id)
            try:
                await agent.destroy_session(session_id)
            except BaiError as exc:
                log.warning("could not destroy orphan session %s: %s", session_id, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_agents(self) -> None:
        interval = max(0.05, self.config.agent_lost_after_s / 4)
        while True:
            await asyncio.sleep(interval)
            for agent in self.agents.find_lost():
                log.warning("agent %s is lost: no heartbeat for %.1f s", agent.info.agent_id,
                            self.config.agent_lost_after_s)
                await self.sessions.agent_lost(agent.info.agent_id)
            await self.sessions.expire_unconfirmed(self.config.agent_lost_after_s)
