"""Escape attempts through the API: each attack runs in a real session, must fail,
and must leave the server and a neighbouring session working.

The network, the host's state and secrets, setuid binaries, kernel tunables,
terminal injection, and signals aimed at the runner. (Resource attacks are in
test_hostile_sessions.py; disk and link attacks in test_scratch_attacks.py; the
output flood in test_output_flood.py.) On both backends (``[local]``, ``[docker]``): two
probes see an image's root differently and have ``docker_only`` variants at the end.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apiclient import SignedClient, stderr_of, stdout_of
from tests.conftest import RunningServer
from tests.security.test_hostile_sessions import assert_neighbour_fine, make_session

pytestmark = [pytest.mark.sandbox, pytest.mark.backends]


@pytest.fixture
def neighbour(api: SignedClient) -> Iterator[str]:
    name = make_session(api)
    api.run(name, "canary = 'alive'")
    yield name
    api.delete(f"/session/{name}")


@pytest.fixture
def attacker(api: SignedClient) -> Iterator[str]:
    name = make_session(api)
    yield name
    api.delete(f"/session/{name}")


def run_json(api: SignedClient, session: str, code: str) -> object:
    """Run ``code``, which prints one JSON document as its last line of stdout."""
    result = api.run(session, code)
    out = stdout_of(result)
    assert result["exitCode"] == 0 and out, f"stdout: {out!r}\nstderr: {stderr_of(result)}"
    return json.loads(out.strip().splitlines()[-1])


def host_addresses() -> list[str]:
    """This host's own non-loopback IPv4 addresses (where the manager may also listen)."""
    addresses = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for a UDP connect
            addresses.add(probe.getsockname()[0])
        except OSError:
            pass
    return sorted(a for a in addresses if not a.startswith("127."))


# -- the network -----------------------------------------------------------------------

EGRESS = """
import errno, json, socket
targets = json.loads(TARGETS)
report = {"interfaces": [name for _, name in socket.if_nameindex()], "tcp": {}, "udp": {}}
for host, port in targets:
    key = f"{host}:{port}"
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((host, port))
        report["tcp"][key] = "connected"
    except OSError as exc:
        report["tcp"][key] = errno.errorcode.get(exc.errno, str(exc)) if exc.errno else type(exc).__name__
    finally:
        s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendto(b"escape", (host, port))
        report["udp"][key] = "sent"
    except OSError as exc:
        report["udp"][key] = errno.errorcode.get(exc.errno, str(exc))
    finally:
        u.close()
print(json.dumps(report))
"""


def test_no_tcp_or_udp_reaches_the_host_or_beyond(
    api: SignedClient, bai_server: RunningServer, attacker: str, neighbour: str
) -> None:
    manager_port = int(bai_server.endpoint.rsplit(":", 1)[1])
    # a UDP and a TCP listener on the host's loopback: neither may hear from the sandbox
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    udp_port = udp.getsockname()[1]
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.settimeout(0.5)
    tcp_port = tcp.getsockname()[1]
    targets = [("127.0.0.1", manager_port), ("127.0.0.1", udp_port), ("127.0.0.1", tcp_port),
               ("1.1.1.1", 53), ("8.8.8.8", 53), ("10.0.0.1", 80), ("169.254.169.254", 80)]
    targets += [(address, manager_port) for address in host_addresses()]
    code = f"TARGETS = {json.dumps(json.dumps(targets))}\n" + EGRESS
    report = run_json(api, attacker, code)
    assert isinstance(report, dict)
    try:
        assert report["interfaces"] == ["lo"]
        for key, outcome in report["tcp"].items():
            # loopback inside is the sandbox's own: nothing listens there
            assert outcome in ("ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH", "EACCES", "EPERM"), (key, outcome)
        for key, outcome in report["udp"].items():
            if key.startswith("127."):
                continue  # "sent" to the sandbox's own loopback; the listener below proves it stayed there
            assert outcome in ("ENETUNREACH", "EHOSTUNREACH", "EACCES", "EPERM"), (key, outcome)
        with pytest.raises(TimeoutError):
            udp.recvfrom(64)
        with pytest.raises(TimeoutError):
            tcp.accept()
    finally:
        udp.close()
        tcp.close()
    assert_neighbour_fine(api, neighbour)


# -- the host's state and secrets ------------------------------------------------------

PROBE_PATHS = """
import json, os
paths = json.loads(PATHS)
found = {}
for path in paths:
    try:
        with open(path, "rb") as f:
            f.read(1)
        found[path] = "READ"
    except IsADirectoryError:
        found[path] = "LISTED:" + ",".join(os.listdir(path)[:5])
    except OSError as exc:
        found[path] = type(exc).__name__
print(json.dumps(found))
"""

SEARCH_SECRETS = """
import json, os
needles = [n.encode() for n in json.loads(NEEDLES)]
hits = []
def check(path):
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        return
    for needle in needles:
        if needle in data:
            hits.append(path)
for top in ("/etc", "/home", "/tmp", "/var", "/run", "/opt", "/srv", "/dev/shm"):
    for root, dirs, files in os.walk(top, followlinks=False):
        for name in files:
            check(os.path.join(root, name))
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for leaf in ("environ", "cmdline"):
        check(f"/proc/{pid}/{leaf}")
env_text = "\\n".join(f"{k}={v}" for k, v in os.environ.items()).encode()
env_hits = [n.decode() for n in needles if n in env_text]
print(json.dumps({"hits": hits, "env": env_hits, "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}))
"""


@pytest.mark.local_only(reason="/sys/fs/cgroup is absent here, an empty masked dir in a container: a docker variant")
def test_the_servers_state_is_out_of_reach(
    api: SignedClient, bai_server: RunningServer, attacker: str, neighbour: str
) -> None:
    data = bai_server.data_dir
    paths = [str(data / "bai.sqlite3"), str(data / "client.env"), str(data), str(data / "agent"),
             "/var/lib/bai", "/root", "/root/.bash_history", "/work", "/etc/shadow", "/etc/ssh",
             "/proc/1/environ", f"/proc/{os.getpid()}/environ", "/sys/fs/cgroup", "/home"]
    found = run_json(api, attacker, f"PATHS = {json.dumps(json.dumps(paths))}\n" + PROBE_PATHS)
    assert isinstance(found, dict)
    assert (data / "bai.sqlite3").exists() and (data / "client.env").exists()  # they exist on the host
    for path, outcome in found.items():
        if path == "/proc/1/environ":
            # the runner's own, inside; it is non-dumpable, so even its uid is refused
            assert outcome == "PermissionError"
        elif path == "/home":
            assert outcome == "LISTED:work"
        elif path == f"/proc/{os.getpid()}/environ" and os.getpid() < 100:
            continue  # a host pid this small may name a sandbox process: not a leak
        else:
            assert outcome in ("FileNotFoundError", "PermissionError"), (path, outcome)
    assert_neighbour_fine(api, neighbour)


def test_no_secret_of_the_server_or_any_keypair_is_visible(
    api: SignedClient, bai_server: RunningServer, attacker: str
) -> None:
    other = api.post("/admin/keypairs", {"user_id": f"victim-{uuid.uuid4().hex[:6]}"}).json()
    needles = [bai_server.secret_key, other["secret_key"], str(bai_server.data_dir)]
    report = run_json(api, attacker, f"NEEDLES = {json.dumps(json.dumps(needles))}\n" + SEARCH_SECRETS)
    assert isinstance(report, dict)
    assert report["hits"] == [] and report["env"] == []
    assert len(report["pids"]) < 10, report["pids"]  # only the sandbox's own processes are visible
    api.delete(f"/admin/keypairs/{other['access_key']}")


def test_another_sessions_files_are_invisible(api: SignedClient, attacker: str, neighbour: str) -> None:
    marker = f"victim-{uuid.uuid4().hex}"
    api.run(neighbour, f"open('/home/work/{marker}', 'w').write('private')")
    code = (
        "import json, os\nhits = []\n"
        "for root, dirs, files in os.walk('/', followlinks=False):\n"
        "    if root.startswith(('/proc', '/sys', '/usr')):\n        dirs[:] = []\n        continue\n"
        f"    hits += [os.path.join(root, f) for f in files if f == {marker!r}]\n"
        "print(json.dumps(hits))\n"
    )
    assert run_json(api, attacker, code) == []
    assert stdout_of(api.run(neighbour, f"print(open('/home/work/{marker}').read())")) == "private\n"


# -- privileges ------------------------------------------------------------------------

SETUID = """
import json, os, stat, subprocess
setuid = []
for top in ("/usr/bin", "/usr/sbin", "/usr/lib"):
    for root, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                setuid.append(path)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
usr_options = [line.split()[5] for line in open("/proc/self/mountinfo") if line.split()[4] == "/usr"]
tries = {}
for argv in (["su", "-c", "id -u", "root"], ["mount", "-t", "tmpfs", "none", "/tmp"],
             ["passwd", "-d", "root"], ["newgrp", "root"], ["chsh", "-s", "/bin/sh", "root"]):
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        tries[argv[0]] = [done.returncode, done.stdout.decode(errors="replace").strip()]
    except FileNotFoundError:
        tries[argv[0]] = None
print(json.dumps({"setuid": setuid, "nnp": status["NoNewPrivs"].strip(), "capeff": status["CapEff"].strip(),
                  "usr": usr_options, "tries": tries, "euid": os.geteuid()}))
"""


@pytest.mark.local_only(reason="/usr is a nosuid mount here, in a container part of the read-only root: a variant")
def test_setuid_binaries_give_nothing(api: SignedClient, attacker: str, neighbour: str) -> None:
    report = run_json(api, attacker, SETUID)
    assert isinstance(report, dict)
    assert report["nnp"] == "1" and int(report["capeff"], 16) == 0
    assert report["usr"] and all("nosuid" in options.split(",") for options in report["usr"])
    for program, outcome in report["tries"].items():
        if outcome is not None:
            returncode, out = outcome
            assert returncode != 0 or out != "0", (program, outcome)
    assert report["euid"] == 1000
    assert_neighbour_fine(api, neighbour)


KERNEL_KNOBS = """
import json
targets = ["/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
           "/proc/sys/kernel/panic", "/proc/sysrq-trigger", "/proc/sys/net/ipv4/ip_forward",
           "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/fs/cgroup/cgroup.procs",
           "/proc/self/oom_score_adj", "/proc/1/oom_score_adj"]
values = {"/proc/sys/kernel/hostname": "pwned", "/proc/sys/kernel/core_pattern": "|/tmp/x",
          "/proc/sys/vm/drop_caches": "3", "/proc/sys/kernel/panic": "1", "/proc/sysrq-trigger": "b",
          "/proc/sys/net/ipv4/ip_forward": "1", "/sys/kernel/mm/transparent_hugepage/enabled": "never",
          "/sys/fs/cgroup/cgroup.procs": "1", "/proc/self/oom_score_adj": "-1000", "/proc/1/oom_score_adj": "1000"}
out = {}
for path in targets:
    try:
        with open(path, "w") as f:
            f.write(values[path])
        out[path] = "WRITTEN"
    except OSError as exc:
        out[path] = type(exc).__name__
print(json.dumps(out))
"""


def test_proc_sys_and_sys_cannot_be_written(api: SignedClient, attacker: str, neighbour: str) -> None:
    watched = ["/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/panic",
               "/proc/sys/net/ipv4/ip_forward", "/sys/kernel/mm/transparent_hugepage/enabled"]
    before = {path: Path(path).read_text() for path in watched if Path(path).exists()}
    report = run_json(api, attacker, KERNEL_KNOBS)
    assert isinstance(report, dict)
    for path, outcome in report.items():
        assert outcome != "WRITTEN", path
    assert {path: Path(path).read_text() for path in before} == before
    assert_neighbour_fine(api, neighbour)


TIOCSTI = """
import errno, fcntl, json, os, termios
out = {}
try:
    os.open("/dev/tty", os.O_RDWR)
    out["dev_tty"] = "OPENED"
except OSError as exc:
    out["dev_tty"] = errno.errorcode.get(exc.errno, str(exc.errno))
master, slave = os.openpty()
for label, fd in (("pty", slave), ("stdin", 0), ("stdout", 1), ("stderr", 2)):
    try:
        fcntl.ioctl(fd, termios.TIOCSTI, b"x")
        out[label] = "INJECTED"
    except OSError as exc:
        out[label] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(out))
"""


def test_tiocsti_cannot_inject_keystrokes(api: SignedClient, attacker: str, neighbour: str) -> None:
    report = run_json(api, attacker, TIOCSTI)
    assert isinstance(report, dict)
    assert report["dev_tty"] in ("ENXIO", "ENOENT", "EACCES"), report  # no controlling terminal
    assert report["pty"] == "EPERM", report  # the syscall filter, even on a terminal it owns
    for label in ("stdin", "stdout", "stderr"):
        assert report[label] in ("EPERM", "ENOTTY", "EBADF"), report
    assert_neighbour_fine(api, neighbour)


SIGNALS = """
import json, os, signal, time
names = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE",
         "SIGSEGV", "SIGABRT", "SIGTSTP", "SIGSTOP", "SIGCONT", "SIGCHLD", "SIGKILL"]
sent = {}
targets = sorted({1, os.getppid()})
for name in names:
    for pid in targets:
        try:
            os.kill(pid, getattr(signal, name))
            sent[f"{name}->{pid}"] = "sent"
        except OSError as exc:
            sent[f"{name}->{pid}"] = type(exc).__name__
    time.sleep(0.02)
print(json.dumps({"targets": targets, "sent": sent}))
"""


def test_signals_to_the_runner_and_pid_1_change_nothing(api: SignedClient, attacker: str, neighbour: str) -> None:
    api.run(attacker, "kept = 42")
    report = run_json(api, attacker, SIGNALS)
    assert isinstance(report, dict)
    assert report["targets"] == [1], report  # the REPL's parent is the runner, PID 1 in the sandbox
    # the session and its REPL state survived every signal
    assert stdout_of(api.run(attacker, "print(kept)")) == "42\n"
    assert api.get(f"/session/{attacker}").json()["status"] == "RUNNING"
    assert_neighbour_fine(api, neighbour)


# -- the docker variants of the local_only tests ---------------------------------


@pytest.mark.docker_only(reason="the local test's probe on an image's root: /sys/fs/cgroup is an empty masked dir")
def test_the_servers_state_and_the_hosts_are_out_of_reach(
    api: SignedClient, bai_server: RunningServer, attacker: str, neighbour: str
) -> None:
    data = bai_server.data_dir
    paths = [str(data / "bai.sqlite3"), str(data / "client.env"), str(data), str(data / "agent"),
             "/var/lib/bai", "/root", "/root/.bash_history", "/work", "/etc/shadow", "/etc/ssh",
             "/proc/1/environ", f"/proc/{os.getpid()}/environ", "/sys/fs/cgroup", "/home", "/proc/keys"]  # fmt: skip
    code = f"PATHS = {json.dumps(json.dumps(paths))}\n" + PROBE_PATHS
    found = run_json(api, attacker, code)
    assert isinstance(found, dict)
    expected = {"/proc/1/environ": "PermissionError", "/home": "LISTED:work", "/sys/fs/cgroup": "LISTED:"}
    for path, outcome in found.items():
        if path in expected:
            assert outcome == expected[path], (path, outcome)
        elif path == "/proc/keys":
            assert outcome == "READ" or outcome.endswith("Error"), outcome  # masked: /dev/null
        elif path == f"/proc/{os.getpid()}/environ" and os.getpid() < 100:
            continue
        else:
            assert outcome in ("FileNotFoundError", "PermissionError"), (path, outcome)
    assert_neighbour_fine(api, neighbour)


@pytest.mark.docker_only(reason="the local test's, where /usr is part of the read-only root, not a nosuid mount")
def test_setuid_binaries_give_nothing_in_a_container(api: SignedClient, attacker: str, neighbour: str) -> None:
    report = run_json(api, attacker, SETUID)
    assert isinstance(report, dict)
    assert report["nnp"] == "1" and int(report["capeff"], 16) == 0 and report["euid"] >= 1_000_000  # its own uid
    for program, outcome in report["tries"].items():
        if outcome is not None:
            returncode, out = outcome
            assert returncode != 0 or out != "0", (program, outcome)
    assert_neighbour_fine(api, neighbour)
