"""The agent daemon (a node of a cluster): the agent, its RPC server, and its
heartbeats to the manager, wired together. Embedded mode does not use this: the
embedded server calls ``Agent`` in process.

    BAI_AGENT_MANAGER_URL=http://manager:8091 BAI_AGENT_CLUSTER_SECRET=... \\
        python -m bai.agent.main
"""

from __future__ import annotations

import asyncio
import logging
import signal

from bai.agent.agent import Agent
from bai.agent.config import AgentConfig
from bai.agent.heartbeat import Heartbeat, ManagerClient
from bai.agent.rpc import RpcServer

log = logging.getLogger(__name__)


async def serve(config: AgentConfig, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set; then destroy every session and leave."""
    if config.cluster_secret is None or not config.manager_url:
        raise ValueError("a cluster agent needs BAI_AGENT_MANAGER_URL and BAI_AGENT_CLUSTER_SECRET")
    secret = config.cluster_secret.get_secret_value()
    agent = Agent(config)
    await agent.start()
    server = RpcServer(agent, secret, config.rpc_host, config.rpc_port)
    manager = ManagerClient(config.manager_url, secret)
    heartbeat = Heartbeat(manager, agent.info, config.heartbeat_interval_s)
    try:
        await server.start()
        agent.on_session_gone = manager.session_gone
        heartbeat.start()
        log.info("agent %s serving on %s:%d", config.agent_id, config.rpc_host, server.port)
        await stop.wait()
    finally:
        await heartbeat.stop()
        await server.stop()
        await agent.stop()
        await manager.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = AgentConfig()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(config, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
