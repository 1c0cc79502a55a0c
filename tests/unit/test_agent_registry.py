"""The manager's agent registry: an agent that comes back on another address gets a new
client, and the old one is closed (its connections would otherwise leak)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from bai.common.agent_rpc import AgentInfo, ByteStream
from bai.common.terminal import Terminal
from bai.manager.agent_client import AgentClient
from bai.manager.agents import AgentRegistry


class RecordingClient(AgentClient):
    def __init__(self, info: AgentInfo) -> None:
        self.url = info.rpc_url
        self.closed = False

    async def send_call(self, call: Any, request: Any) -> Any:
        raise NotImplementedError

    async def send_upload(self, call: Any, request: Any, chunks: AsyncIterator[bytes]) -> None:
        raise NotImplementedError

    async def send_download(self, call: Any, request: Any) -> ByteStream:
        raise NotImplementedError

    async def open_websocket(self, call: Any, request: Any) -> Terminal:
        raise NotImplementedError

    async def close(self) -> None:
        self.closed = True


def info(url: str, boot: str) -> AgentInfo:
    return AgentInfo(agent_id="node-1", rpc_url=url, backend="local", capacity={"cpu": "2"}, environments=[],
                     version="test", boot_id=boot)


def registry() -> tuple[AgentRegistry, list[RecordingClient]]:
    made: list[RecordingClient] = []

    def factory(agent: AgentInfo) -> RecordingClient:
        made.append(RecordingClient(agent))
        return made[-1]

    agents = AgentRegistry(lost_after_s=10.0)
    agents.register_client_factory("http", factory)
    return agents, made


async def test_a_client_of_an_address_the_agent_left_is_closed() -> None:
    agents, made = registry()
    agents.heartbeat(info("http://10.0.0.1:7001", "a"))
    agents.heartbeat(info("http://10.0.0.1:7001", "a"))  # the same address keeps its client
    assert len(made) == 1
    state, new, restarted = agents.heartbeat(info("http://10.0.0.1:7002", "b"))
    assert (new, restarted, state.client) == (True, True, made[1])
    await agents.close()  # waits for the old client's close, which began at the heartbeat
    assert [client.closed for client in made] == [True, True]


def test_without_an_event_loop_the_old_client_is_closed_with_the_registry() -> None:
    agents, made = registry()
    agents.heartbeat(info("http://10.0.0.1:7001", "a"))
    agents.heartbeat(info("http://10.0.0.1:7002", "b"))
    assert not made[0].closed
    asyncio.run(agents.close())
    assert made[0].closed
