"""The terminal WebSocket (API.md section 6) against the real server: a shell on a
real pty in the session's sandbox, driven by a plain websockets client; on both backends
(``[local]``, ``[docker]``) but for the manager's idle clock. The cluster tests (a
terminal relayed by a remote agent, the agent route's cluster secret) run on the local
backend."""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.apiclient import SignedClient
from tests.conftest import RunningServer
from tests.integration.test_cluster import Cluster, cluster
from tests.manual_clock import driving, nothing_in_flight, reap
from tests.waiting import wait_for

__all__ = ["cluster"]  # a fixture, from test_cluster

pytestmark = [pytest.mark.sandbox, pytest.mark.backends]


def _create(api: SignedClient, **config: Any) -> str:
    name = f"pty-{uuid.uuid4().hex[:8]}"
    r = api.post("/session", {"image": "python", "name": name, "config": config})
    assert r.status_code == 201, r.text
    return name


@pytest.fixture
def session(api: SignedClient) -> Iterator[str]:
    name = _create(api)
    yield name
    api.delete(f"/session/{name}")


def open_pty(api: SignedClient, session: str, query: str = "", prefix: str = "session") -> ClientConnection:
    path = f"/stream/{prefix}/{session}/pty{query}"
    headers = api.headers("GET", path, b"", None)
    return connect("ws" + api.endpoint[4:] + path, additional_headers=headers, open_timeout=10)


def type_in(ws: ClientConnection, text: str) -> None:
    ws.send(json.dumps({"type": "stdin", "chars": base64.b64encode(text.encode()).decode()}))


def read_until(ws: ClientConnection, needle: bytes, timeout: float = 15) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        assert frame["type"] == "out", (frame, seen[-300:])
        seen += base64.b64decode(frame["data"])
    return seen


def until_exit(ws: ClientConnection, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if frame["type"] == "exit":
            return dict(frame)


def test_a_command_runs_in_the_sandbox_and_exit_ends_the_stream(api: SignedClient, session: str) -> None:
    with open_pty(api, session) as ws:
        type_in(ws, "echo $((6*7))-$TERM-$PWD; id -u\n")
        out = read_until(ws, b"42-xterm-256color-/home/work")
        type_in(ws, "exit 5\n")
        assert until_exit(ws)["exitCode"] == 5
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert b"\n0" not in out.replace(b"\r", b"")  # not root in the sandbox


def test_resize_and_the_initial_size(api: SignedClient, session: str) -> None:
    with open_pty(api, session, "?rows=33&cols=111") as ws:
        type_in(ws, "stty size\n")
        read_until(ws, b"33 111")
        ws.send(json.dumps({"type": "resize", "rows": 40, "cols": 132}))
        type_in(ws, "stty size\n")
        read_until(ws, b"40 132")


#: A foreground job that says it runs (the terminal's echo of the typed line shows only
#: "started-$((2*3))"); a ^C that reaches it, sh or the sleep it became, ends it by SIGINT.
STARTED_JOB = "sh -c 'echo started-$((2*3)); exec sleep 30'\n"


def interrupt_started_job(ws: ClientConnection) -> None:
    """Start STARTED_JOB, wait for its own output, ^C it; its status is SIGINT's 130,
    long before its sleep could end."""
    type_in(ws, STARTED_JOB)
    read_until(ws, b"started-6")
    type_in(ws, "\x03")
    type_in(ws, "echo status-$?\n")
    read_until(ws, b"status-130")


def test_ctrl_c_interrupts_the_foreground_program(api: SignedClient, session: str) -> None:
    with open_pty(api, session) as ws:
        interrupt_started_job(ws)
        type_in(ws, "echo back-$((1+2))\n")
        read_until(ws, b"back-3")


def test_bad_frames_are_answered_and_the_terminal_goes_on(api: SignedClient, session: str) -> None:
    with open_pty(api, session) as ws:
        for bad, word in [
            ("{nope", "JSON"),
            ('{"type": "stdin", "chars": "%%"}', "chars"),
            ('{"type": "resize", "rows": 0, "cols": 80}', "rows"),
            ('{"type": "warp"}', "type"),
            ("[1]", "type"),
        ]:
            ws.send(bad)
            frame = json.loads(ws.recv(timeout=10))
            while frame["type"] == "out":  # the prompt
                frame = json.loads(ws.recv(timeout=10))
            assert frame["type"] == "error" and word in frame["msg"], (bad, frame)
        ws.send(json.dumps({"type": "ping"}))
        type_in(ws, "echo fine-$((2*4))\n")
        read_until(ws, b"fine-8")


def test_restart_starts_a_new_shell(api: SignedClient, session: str) -> None:
    with open_pty(api, session) as ws:
        type_in(ws, "export MARK=first; echo $$ > /tmp/shell1; echo m-$MARK\n")
        read_until(ws, b"m-first")
        ws.send(json.dumps({"type": "restart"}))
        type_in(ws, "echo m-${MARK:-unset}\n")
        read_until(ws, b"m-unset")


def test_several_terminals_and_the_v4_route(api: SignedClient, session: str) -> None:
    with open_pty(api, session) as one, open_pty(api, session, prefix="kernel") as two:
        type_in(one, "echo one-$((1*11))\n")
        type_in(two, "echo two-$((2*11))\n")
        read_until(one, b"one-11")
        read_until(two, b"two-22")


#: the command lines of the sandbox's processes, read from /proc (the kernel images have no ps)
PROCESSES = (
    "import os\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        print(open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode())\n"
    "    except OSError:\n"
    "        pass\n"
)


def _processes(api: SignedClient, session: str) -> str:
    return "".join(data for _, data in api.run(session, PROCESSES)["console"])


def test_closing_the_socket_hangs_the_shell_up(api: SignedClient, session: str) -> None:
    with open_pty(api, session) as ws:
        type_in(ws, "sleep 1000 & echo $! > bgpid; sleep 999\n")
        # the shell and its foreground job run before the socket closes
        assert wait_for(lambda: "sleep 999" in _processes(api, session), timeout=15)
        assert "bash -i" in _processes(api, session)
    # the hang-up is asynchronous to the close: poll until it is done
    assert wait_for(lambda: "sleep 999" not in (out := _processes(api, session)) and "bash -i" not in out,
                    timeout=15), _processes(api, session)


def test_a_flood_stays_bounded_and_ctrl_c_stops_it(api: SignedClient, session: str) -> None:
    neighbour = _create(api)
    try:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open_pty(api, session) as ws:
            type_in(ws, "yes\n")
            read_until(ws, b"y\r\ny\r\n")  # it floods
            time.sleep(1.5)  # nobody reads for a while (not a synchronisation): the flood must wait, not pile up
            assert api.run(neighbour, "print('neighbour ok')")["console"] == [["stdout", "neighbour ok\n"]]
            received = 0
            while received <= 10_000:  # what waited comes once read
                received += len(base64.b64decode(json.loads(ws.recv(timeout=10))["data"]))
            type_in(ws, "\x03")
            type_in(ws, "echo stopped-$((5*5))\n")
            read_until(ws, b"stopped-25", timeout=30)
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        assert grown_kib < 64 * 1024, f"the server grew by {grown_kib} KiB"
    finally:
        api.delete(f"/session/{neighbour}")


def test_another_keypairs_session_is_404(api: SignedClient, session: str) -> None:
    r = api.post("/admin/keypairs", {"user_id": f"u-{uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text  # created
    keys = r.json()
    other = SignedClient(api.endpoint, keys["access_key"], keys["secret_key"])
    try:
        with pytest.raises(InvalidStatus, match="404"):
            open_pty(other, session)
        with pytest.raises(InvalidStatus, match="404"):
            open_pty(api, "no-such-session")
        with pytest.raises(InvalidStatus, match="400"):
            open_pty(api, session, "?rows=-3")
    finally:
        other.close()


@pytest.mark.local_only(reason="the manager's idle clock (kept going by an open terminal): no part of the backend's")
def test_an_open_terminal_keeps_its_session_from_idling_out(api: SignedClient, bai_server: RunningServer) -> None:
    """On the manager's clock, moved by the test: the terminal's open time does not count
    as idle, its end starts the idle time."""
    with driving(bai_server.server.manager.clock) as clock:
        name = _create(api, limits={"idleTimeout": 60})
        session_id = api.get(f"/session/{name}").json()["sessionId"]
        try:
            with open_pty(api, name) as ws:
                type_in(ws, "echo open-$((2*3))\n")
                read_until(ws, b"open-6")  # the relay runs: the manager counts the terminal in use
                clock.advance(600)  # no keys typed, but the terminal is open
                assert session_id not in reap(bai_server)
                type_in(ws, "echo still-$((3*3))\n")
                read_until(ws, b"still-9")
            wait_for(lambda: nothing_in_flight(bai_server, session_id), what="the terminal's end at the manager")
            clock.advance(59)
            assert session_id not in reap(bai_server)
            clock.advance(1)
            assert session_id in reap(bai_server), "closed, the session idles out"
            wait_for(lambda: api.get(f"/session/{name}").json()["status"] == "TERMINATED")
        finally:
            api.delete(f"/session/{name}")


def test_a_terminal_on_a_remote_agent(cluster: Cluster) -> None:
    api = cluster.api
    assert wait_for(lambda: api.post("/session", {"image": "python", "name": "term"}).status_code == 201)
    with open_pty(api, "term", "?rows=20&cols=70") as ws:
        type_in(ws, "stty size; echo remote-$((7*6))\n")
        read_until(ws, b"remote-42")
        ws.send(json.dumps({"type": "resize", "rows": 44, "cols": 120}))
        interrupt_started_job(ws)
        type_in(ws, "stty size\n")
        read_until(ws, b"44 120")
        type_in(ws, "yes | head -c 3000000; echo end-$((1+1))\n")  # more than every window on the way
        assert read_until(ws, b"end-2", timeout=60).count(b"y\r\n") >= 1_500_000
        type_in(ws, "exit 4\n")
        assert until_exit(ws)["exitCode"] == 4
    with pytest.raises(InvalidStatus, match="400"):
        open_pty(api, "term", "?cols=0")


def test_the_agent_terminal_route_wants_the_cluster_secret(cluster: Cluster) -> None:
    api = cluster.api
    assert wait_for(lambda: api.post("/session", {"image": "python", "name": "guarded"}).status_code == 201)
    agent_url = cluster.manager.manager.agents.alive()[0].info.rpc_url
    session_id = api.get("/session/guarded").json()["sessionId"]
    url = "ws" + agent_url.removeprefix("http") + f"/rpc/open_terminal?session_id={session_id}&rows=24&cols=80"
    with pytest.raises(InvalidStatus, match="401"):
        connect(url, additional_headers={"X-BAI-Cluster-Secret": "wrong"}, open_timeout=10)
    with pytest.raises(InvalidStatus, match="401"):
        connect(url, open_timeout=10)


TIOCSTI_PROBE = (
    "import fcntl, termios\\n"
    "try:\\n"
    "    fcntl.ioctl(0, termios.TIOCSTI, b'x'); print('tiocsti-' + 'allowed')\\n"
    "except OSError as e:\\n"
    "    print('tiocsti-errno', e.errno)\\n"
)


def test_the_terminal_is_the_sessions_own_and_tiocsti_stays_refused(api: SignedClient, session: str) -> None:
    api.run(session, f"open('/home/work/probe.py', 'w').write({TIOCSTI_PROBE!r})")
    with open_pty(api, session) as ws:
        type_in(ws, "python3 probe.py; tty; cat /proc/self/cgroup | wc -l; echo done-$((9*9))\n")
        out = read_until(ws, b"done-81")
    assert b"tiocsti-errno" in out and b"tiocsti-allowed" not in out
    assert b"/dev/pts/" in out  # a real pty: job control, line editing, Ctrl-C


async def _sdk_terminal(endpoint: str, access_key: str, secret_key: str, session: str) -> tuple[bytes, int | None]:
    from bai.client.config import APIConfig
    from bai.client.session import AsyncSession

    config = APIConfig(endpoint=endpoint, access_key=access_key, secret_key=secret_key)
    out = b""
    async with AsyncSession(config) as sdk, sdk.ComputeSession(session).terminal(rows=25, cols=81) as term:
        await term.send(b"stty size; exit 9\n")
        while (data := await term.read()) is not None:
            out += data
    return out, term.exit_code


def test_the_sdk_terminal(api: SignedClient, session: str) -> None:
    out, code = asyncio.run(_sdk_terminal(api.endpoint, api.access_key, api.secret_key, session))
    assert b"25 81" in out and code == 9
