"""A manager and an agent in separate processes: the agent registers over HTTP,
sessions run on it through the agent RPC, and the manager notices when it dies."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from bai.common.agent_calls import REPORTS, SECRET_HEADER, Report
from bai.manager.config import ManagerConfig
from bai.manager.core import Manager
from bai.manager.serve import ApiServer
from tests.apiclient import SignedClient, download, stdout_of, tars_of, upload
from tests.capabilities import require_or_skip
from tests.conftest import sandbox_unavailable
from tests.waiting import wait_for

pytestmark = pytest.mark.sandbox


class ManagerThread:
    def __init__(
        self, data_dir: Path, secret: str, agent_lost_after_s: float = 1.0, port: int = 0, keep_sessions: bool = False
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.manager = Manager(
            ManagerConfig(
                data_dir=data_dir, cluster_secret=secret, agent_lost_after_s=agent_lost_after_s,
                keep_sessions=keep_sessions,
            )
        )  # fmt: skip
        self.api = ApiServer(self.manager, "127.0.0.1", port)

    def stop(self) -> None:
        self.call(self.api.stop())
        self.call(self.manager.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _start(self, data_dir: Path):  # type: ignore[no-untyped-def]
        await self.manager.start()
        await self.api.start()
        return await self.api.publish_credentials(data_dir)


@dataclass
class Cluster:
    api: SignedClient
    agent: subprocess.Popen[bytes]
    manager: ManagerThread
    endpoint: str = ""
    secret: str = ""


def start_agent(cluster: Cluster, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``bai agent`` node-1 on the cluster's manager (again, after a restart: the same data
    dir). Its RPC port is 0: the agent binds a free one and advertises it in its heartbeat,
    so that no port is chosen here and lost to another process before the agent binds it."""
    bai = Path(sys.executable).with_name("bai")
    return subprocess.Popen(
        [str(bai), "agent", "--manager", cluster.endpoint, "--agent-id", "node-1", "--rpc-port", "0",
         "--data-dir", str(tmp_path / "agent"), "--heartbeat", "0.2",
         "--log-level", "warning", *extra],
        env={**os.environ, "BAI_AGENT_CLUSTER_SECRET": cluster.secret}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A manager in a thread and agent node-1 in a process. Options: ``agent_lost_after_s``
    and ``keep_sessions`` for the manager, ``agent_args`` for ``bai agent`` (``indirect=True``
    parametrization)."""
    if reason := sandbox_unavailable():
        require_or_skip("sandbox", reason)
    options = getattr(request, "param", {})
    secret = secrets.token_hex(16)
    mgr = ManagerThread(
        tmp_path / "manager", secret, options.get("agent_lost_after_s", 1.0), 0, options.get("keep_sessions", False),
    )  # fmt: skip
    mgr.thread.start()
    creds = mgr.call(mgr._start(tmp_path / "manager"))
    api = SignedClient(creds.endpoint, creds.access_key, creds.secret_key)
    cluster = Cluster(api, None, mgr, creds.endpoint, secret)  # type: ignore[arg-type]
    cluster.agent = agent = start_agent(cluster, tmp_path, *options.get("agent_args", ()))
    try:
        yield cluster
    finally:
        cluster.api.close()
        agent = cluster.agent
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        if agent.stderr:
            agent.stderr.close()
        cluster.manager.stop()


def test_sessions_run_on_a_remote_agent_and_its_death_is_noticed(cluster: Cluster) -> None:
    api, agent = cluster.api, cluster.agent
    assert wait_for(lambda: api.post("/session", {"image": "python", "name": "remote"}).status_code == 201)
    assert api.get("/session/remote").json()["agent"] == "node-1"
    api.run("remote", "x = 41")
    remote = api.run("remote", "print(x + 1)")
    assert stdout_of(remote) == "42\n"
    stats = remote["options"]["stats"]  # RunStats crosses the agent RPC
    assert stats["output_bytes"] == 3 and stats["mem_peak"] > 0 and stats["wall_ms"] > 0
    result = api.post("/session/remote", {"mode": "query", "code": "print(input('? '))"}).json()["result"]
    assert result["status"] == "waiting-input"
    answer = api.post("/session/remote", {"mode": "input", "runId": result["runId"], "code": "via rpc"})
    assert stdout_of(answer.json()["result"]) == "via rpc\n"
    bad = api.post("/session/remote", {"mode": "continue", "runId": "no-such-run"})
    assert bad.status_code == 400, bad.text  # the agent's InvalidRequest comes back as one
    agent.kill()
    assert wait_for(lambda: api.get("/session/remote").json()["status"] == "ERROR")
    assert api.get("/session/remote").json()["statusInfo"] == "agent-lost"


@pytest.mark.parametrize("report", REPORTS, ids=lambda report: report.name)
@pytest.mark.parametrize("secret", ["nope", None])
def test_every_agent_report_wants_the_cluster_secret(cluster: Cluster, report: Report[BaseModel],
                                                     secret: str | None) -> None:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    r = cluster.api.http.post(report.path, json={}, headers=headers)
    assert r.status_code == 401 and SECRET_HEADER in r.json()["msg"]
    # with the secret, the same empty body reaches the route's parsing: the route exists
    r = cluster.api.http.post(report.path, json={}, headers={SECRET_HEADER: cluster.secret})
    assert r.status_code == 400


def test_sandboxes_the_manager_does_not_know_are_destroyed(cluster: Cluster) -> None:
    """A manager that lost track of a session (here it forgets one, as a restarted manager
    would) has the agent stop that sandbox at the agent's next heartbeat."""
    api, mgr = cluster.api, cluster.manager
    assert wait_for(lambda: api.post("/session", {"image": "python", "name": "forgotten"}).status_code == 201)
    session_id = api.get("/session/forgotten").json()["sessionId"]
    agent_state = mgr.manager.agents.get("node-1")
    assert agent_state is not None
    assert wait_for(lambda: session_id in agent_state.info.sessions)

    async def forget() -> None:
        state = mgr.manager.sessions.state
        session = state._live.pop(session_id)
        state._names.pop((session.access_key, session.name))

    mgr.call(forget())
    assert wait_for(lambda: session_id not in agent_state.info.sessions)


def test_session_files_cross_the_agent_rpc(cluster: Cluster) -> None:
    """Uploads stream to the remote agent (a chunked body), downloads stream back, and
    the agent's refusals come back as the same 400/404 naming the path."""
    api = cluster.api
    assert wait_for(lambda: api.post("/session", {"image": "python", "name": "files"}).status_code == 201)
    big = os.urandom(5 * 2**20 + 123)
    assert upload(api, "files", [("big.bin", big), ("d/small.txt", b"small")]).status_code == 204
    api.run("files", "import os\nos.symlink('/etc/passwd', '/home/work/d/pw')")
    entries = {e["filename"]: e for e in json.loads(api.get("/session/files/files?path=d").json()["files"])}
    assert entries["small.txt"]["size"] == 5 and entries["pw"]["type"] == "link"
    first, second = tars_of(download(api, "files", ["big.bin", "d"]))
    member = first.extractfile("big.bin")
    assert member is not None and member.read() == big
    assert sorted(second.getnames()) == ["d", "d/pw", "d/small.txt"]
    refused = upload(api, "files", [("d/pw", b"pwned")])
    assert refused.status_code == 400 and "'d/pw'" in refused.json()["msg"], refused.text
    refused = upload(api, "files", [("d/pw", big)])  # refused before the agent read the body
    assert refused.status_code == 400 and "'d/pw'" in refused.json()["msg"], refused.text
    assert download(api, "files", ["d/pw"]).status_code == 400
    assert download(api, "files", ["missing"]).status_code == 404
    assert api.get("/session/files/files?path=d/pw").status_code == 400
