"""bai.client: the SDK and the ``bai`` CLI.

Async (the implementation)::

    async with AsyncSession() as api:
        sess = await api.ComputeSession.get_or_create("python", name="demo")
        async with sess.stream_execute("print(42)") as stream:
            async for frame in stream: ...
        frame.stats  # the last frame's: what the run used (RunStats)
        stats = await sess.destroy()

Blocking (the same API, without ``await``)::

    with Session() as api:
        out = api.ComputeSession("demo").run("print(42)")   # to its end: out.stdout, out.exit_code

Modules: ``config`` (BACKEND_* variables), ``auth`` (request signing),
``session`` (AsyncSession: the HTTP client), ``compute`` (compute sessions),
``stream`` (the execute WebSocket), ``runs`` (a run to its end), ``admin`` (keypairs), ``models`` (answers),
``errors`` (the error tree and the problem+json table), ``sync`` (the blocking
API: typed twins of the async classes), ``cli/`` (the ``bai`` command).
"""

from bai.client.admin import AdminAPI
from bai.client.compute import AsyncComputeSession, ComputeSessionFactory
from bai.client.config import CLIENT_API_VERSION, APIConfig
from bai.client.errors import ClientError, ConfigError, ConnectionFailed, ProtocolError, ServerError
from bai.client.models import SessionStats, StreamFrame
from bai.client.runs import RunOutput
from bai.client.session import AsyncSession
from bai.client.stream import ExecutionStream
from bai.client.sync import Session
from bai.common.agent_rpc import RunStats

__all__ = [
    "CLIENT_API_VERSION",
    "APIConfig",
    "AdminAPI",
    "AsyncComputeSession",
    "AsyncSession",
    "ClientError",
    "ComputeSessionFactory",
    "ConfigError",
    "ConnectionFailed",
    "ExecutionStream",
    "ProtocolError",
    "RunOutput",
    "RunStats",
    "ServerError",
    "Session",
    "SessionStats",
    "StreamFrame",
]
