"""The agent daemon (a node of a cluster): the agent, its RPC server, and its
heartbeats to the manager, wired together. Started by ``bai agent`` (cli.py).
Embedded mode does not use this: the embedded server calls ``Agent`` in process."""

from __future__ import annotations

import asyncio
import logging

from bai.agent.agent import Agent
from bai.agent.config import AgentConfig
from bai.agent.heartbeat import Heartbeat, ManagerClient
from bai.agent.rpc import AgentRpcServer
from bai.common.stopping import StopBudget

log = logging.getLogger(__name__)


async def serve(config: AgentConfig, stop: asyncio.Event, budget: StopBudget | None = None) -> None:
    """Run until ``stop`` is set; then destroy every session and leave, within ``budget``
    (a step past it is logged and abandoned: bai.common.stopping)."""
    budget = budget or StopBudget()
    if config.cluster_secret is None or not config.manager_url:
        raise ValueError("a cluster agent needs BAI_AGENT_MANAGER_URL and BAI_AGENT_CLUSTER_SECRET")
    secret = config.cluster_secret.get_secret_value()
    agent = Agent(config)
    await agent.start()
    server = AgentRpcServer(agent, secret, config.rpc_host, config.rpc_port)
    manager = ManagerClient(config.manager_url, secret)
    heartbeat = Heartbeat(manager, agent.info, config.heartbeat_interval_s)
    try:
        await server.start()
        if not config.rpc_url:  # the port may have been 0: advertise the one we got
            agent.rpc_url = f"http://{config.rpc_host}:{server.port}"
        agent.on_session_gone = manager.session_gone
        heartbeat.start()
        log.info("agent %s serving on %s:%d", config.agent_id, config.rpc_host, server.port)
        await stop.wait()
    finally:
        await budget.step("stopping the heartbeats", heartbeat.stop())
        await budget.step("stopping the RPC server", server.stop())
        await budget.step("stopping the agent", agent.stop())
        await budget.step("closing the manager's client", manager.close())
