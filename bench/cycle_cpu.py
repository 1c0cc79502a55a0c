"""CPU per session create + destroy cycle of the embedded server (local backend), robust to
other work on the machine: the CPU time of the processes a cycle involves, not the wall clock.

    .venv/bin/python -m bench.cycle_cpu [--cycles N] [--workers W] [--rounds R] [--src TREE ...]

Each round starts a ``bai server`` per source tree (``--src``: a tree holding ``bai/``,
e.g. ``git archive HEAD src | tar -x -C /tmp/base``; default: this checkout's), warms it
(a few cycles, then the pool refills), and runs N create + destroy cycles through the
API with W clients in parallel (as ``bench.run``'s sustained figure), the trees interleaved
round by round so that the load of a shared machine falls on all of them alike. Counted
between two quiet points (the pool full before and after, so each cycle started one sandbox):

- ``server``: the server process's own user and system time (/proc/<pid>/stat), its threads included;
- ``children``: the server's descendants (the spawn helper, bwrap, the runner and its REPL
  child; mkfs): for each process, its own time and what it reaped (cutime + cstime), over
  the living tree below the server (/proc/<pid>/task/*/children), so that a process
  reaped between the two points is counted once, in its parent;
- ``in_cgroups``: the part of ``children`` that ran in the sessions' cgroups (bwrap, the
  runner and its REPL child: they join before exec), from the CPU accounting of the
  agent's cgroup parent (v1 ``cpuacct.usage``, v2 ``cpu.stat``), which keeps what its
  removed children used; the rest of ``children`` is the spawn helper, its forks before
  they joined, and the server's other helpers (mkfs...). Other embedded servers
  running at the same time (agent id ``embedded``, tests) would be counted too;
- ``orphans``: sandbox processes whose parent died first (a runner whose bwrap was
  killed before it reaped it): this process is the server's child subreaper and reaps them;
- ``clients``: this process (the W client threads);
- ``machine``: every CPU's busy time (/proc/stat), which also holds the kernel's deferred
  work (namespace and cgroup teardown in kworkers) and anything else running: an upper bound.

Printed per tree: ms of CPU per cycle for each part (median over rounds) and the
cycles per second of the timed part (noisy when the machine is shared).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.proctree import machine_busy_ms, proc_times, subtree_ms
from bench.run import Api, admin_api, free_port

PR_SET_CHILD_SUBREAPER = 36
REPO_SRC = Path(__file__).resolve().parents[1] / "src"
SERVER_BOOT = "import sys; sys.path.insert(0, %r); from bai.client.cli.main import main; main()"
PARTS = ("server_user", "server_sys", "children", "in_cgroups", "orphans", "clients", "machine")
AGENT_CGROUPS = (  # the embedded agent's cgroup parent (agent id "embedded"): v1, v2
    Path("/sys/fs/cgroup/cpuacct/bai/embedded/cpuacct.usage"),
    Path("/sys/fs/cgroup/bai/embedded/cpu.stat"),
)


@dataclass
class Snapshot:
    server_user: float = 0.0
    server_sys: float = 0.0
    children: float = 0.0
    in_cgroups: float = 0.0
    clients: float = 0.0
    machine: float = 0.0


def sessions_cgroup_ms() -> float:
    """CPU of every session of the embedded agents, living or removed, ms (0: no cgroups)."""
    v1, v2 = AGENT_CGROUPS
    if v1.exists():
        return int(v1.read_text()) / 1e6
    if v2.exists():
        usage = next(line for line in v2.read_text().splitlines() if line.startswith("usage_usec"))
        return int(usage.split()[1]) / 1e3
    return 0.0


def snapshot(server_pid: int) -> Snapshot:
    user, system, reaped = proc_times(server_pid)
    children = reaped + subtree_ms(server_pid)
    own = resource.getrusage(resource.RUSAGE_SELF)
    clients = (own.ru_utime + own.ru_stime) * 1000
    return Snapshot(user, system, children, sessions_cgroup_ms(), clients, machine_busy_ms())


class Orphans:
    """Reaps the server's orphaned descendants (this process is their subreaper)."""

    def __init__(self) -> None:
        self.ms = 0.0
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")

    def reap(self, keep: set[int]) -> None:
        """Reap every exited child but those in ``keep`` (the servers, waited for by Popen)."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid in keep:
                return
            _, _, usage = os.wait4(info.si_pid, 0)
            self.ms += (usage.ru_utime + usage.ru_stime) * 1000


def start_server(src: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    argv = [sys.executable, "-c", SERVER_BOOT % src, "server", "--data-dir", str(data_dir), "--port", str(free_port())]
    with open(os.environ.get("BAI_BENCH_LOG", os.devnull), "a") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    env_file = data_dir / "client.env"
    for _ in range(600):
        if env_file.exists():
            break
        time.sleep(0.05)
    env = dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines())
    return proc, env


def cycles(env: dict[str, str], total: int, workers: int, tag: str) -> float:
    """``total`` create + destroy cycles split over ``workers`` clients; returns the seconds taken."""
    failures: list[object] = []

    def worker(index: int) -> None:
        api = admin_api(env)
        for i in range(index, total, workers):
            name = f"{tag}-{i}"
            status, body = api.call("POST", "/session", {"image": "python", "name": name})
            if status != 201:
                failures.append(body)
                return
            status, body = api.call("DELETE", f"/session/{name}")
            if status != 200:
                failures.append(body)
                return

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"a cycle failed: {failures[0]}")
    return elapsed


def pool_full(env: dict[str, str]) -> None:
    """Wait until the agent's pool holds its target again (at most 10 s; the figure is the
    last heartbeat's, sent every second)."""
    api = Api(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"])
    time.sleep(1.2)
    for _ in range(100):
        status, body = api.call("GET", "/admin/agents")
        agents = body if isinstance(body, list) else body.get("items", []) if isinstance(body, dict) else []
        if status == 200 and agents and all(_pool_ready(agent) for agent in agents):
            return
        time.sleep(0.1)


def _pool_ready(agent: object) -> bool:
    pool = agent.get("pool") if isinstance(agent, dict) else None
    return isinstance(pool, dict) and bool(pool) and all(count >= 2 for count in pool.values())


def start_perf(output: str | None) -> subprocess.Popen[bytes] | None:
    """``perf record -a -g`` into ``output`` until stopped (None: no recording)."""
    if output is None:
        return None
    perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "999", "-o", output],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # perf's own start, outside the window that counts
    return perf


def stop_perf(perf: subprocess.Popen[bytes] | None) -> None:
    if perf is not None:
        perf.send_signal(2)
        perf.wait(60)


def one_round(src: str, n: int, workers: int, reaper: Orphans, perf_output: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bai-cycle-") as tmp:
        proc, env = start_server(src, Path(tmp))
        try:
            cycles(env, 4, 2, "warm")
            pool_full(env)
            reaper.reap({proc.pid})
            perf = start_perf(perf_output)
            before, orphans_before = snapshot(proc.pid), reaper.ms
            elapsed = cycles(env, n, workers, "cycle")
            stop_perf(perf)
            pool_full(env)
            reaper.reap({proc.pid, *([perf.pid] if perf else [])})
            after, orphans_after = snapshot(proc.pid), reaper.ms
        finally:
            proc.terminate()
            proc.wait(60)
            reaper.reap(set())
    out = {part: (getattr(after, part) - getattr(before, part)) / n for part in vars(before)}
    out["orphans"] = (orphans_after - orphans_before) / n
    out["rate"] = n / elapsed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200, help="measured cycles per round")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", action="append", help="a source tree holding bai/ (repeatable)")
    parser.add_argument("--perf", metavar="FILE", help="perf record -a -g the cycles of the last round into FILE")
    args = parser.parse_args()
    sources = args.src or [str(REPO_SRC)]
    reaper = Orphans()
    results: dict[str, list[dict[str, float]]] = {src: [] for src in sources}
    for round_ in range(args.rounds):
        for src in sources:
            perf = f"{args.perf}.{sources.index(src)}" if args.perf and round_ == args.rounds - 1 else None
            results[src].append(one_round(src, args.cycles, args.workers, reaper, perf))
    print(f"{args.cycles} cycles x {args.rounds} rounds, {args.workers} clients, {os.cpu_count()} CPUs; "
          "ms of CPU per cycle (median of the rounds)")
    header = ["tree", *PARTS, "sandbox+server", "cycles/s"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for src, rounds in results.items():
        med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        total = statistics.median(
            r["server_user"] + r["server_sys"] + r["children"] + r["orphans"] for r in rounds)
        cells = [f"{med[part]:.2f}" for part in PARTS]
        rates = "/".join(f"{r['rate']:.1f}" for r in rounds)
        print(f"| {src} | " + " | ".join(cells) + f" | **{total:.2f}** | {rates} |")


if __name__ == "__main__":
    main()
