"""The foundation benchmark: session create → ready and the exec round trip of
``1+1``, through the full API (a real ``bai server`` subprocess, signed HTTP
requests over one kept-alive connection), with baselines measured in the same
run: a plain ``python3 -c pass`` spawn, a bare ``bwrap … python3 -c pass``, and a
Jupyter kernel start (jupyter_client).

Create → ready is measured three times: served from the warm pool (the default; between
two creates the bench waits POOL_REFILL_WAIT_S so each one finds a ready sandbox), the
same with the server kept busy during that wait (``_busy``: it serves executes instead
of idling; on a VM that reclaims an idle guest's memory, idle time makes the next
request slower), and cold, by a second server started with ``BAI_AGENT_POOL_SIZE=0``.

Two more measure the pool under load, against the same server:

- sustained create + destroy: WORKERS clients, each on its own connection, create a
  session and destroy it in a loop for SECONDS; the rate is cycles per second. With it,
  the CPU each cycle took (``sustained_cpu_ms_per_cycle``: the server and every process
  below it, bench.proctree; ``_all``: with the clients), which other work on a shared
  machine changes far less than the rate, and the rate that CPU allows on this machine
  when nothing else runs (``sustained_cycles_per_s_cpu_bound``: CPUs × 1000 ms / the
  ``_all`` figure; an upper bound, as the kernel's deferred work is in no process), and
  every CPU's busy time per cycle (``sustained_machine_ms_per_cycle``: all of it, others'
  work included). The pool's refills in flight at the two ends of the run are a few
  sandboxes of error over hundreds of cycles;
- idle sessions per GiB: N sessions created and left idle, then the sum of their
  cgroup memory (``lastStat.mem.current`` of each, the same figure the API reports)
  and the fall of the host's MemAvailable; a Jupyter kernel's memory (PSS of the
  kernel process) is the baseline.

With ``--docker`` the docker backend (bai.agent.backends.docker.backend) is measured too, by
servers started with ``--backend docker``: pooled and cold create → ready and the exec
round trip, against a ``docker run --rm bai/python:3.11 python3 -c pass`` baseline
measured in the same run (and the local backend's figures above).

    ./dev bench [--creates N] [--execs N] [--kernels N] [--seconds S] [--workers W] [--idle N] [--docker]
                [--json PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bai.common.signing import signed_headers
from bench.proctree import machine_busy_ms, tree_ms

VERSION = "v8.20240915"
POOL_REFILL_WAIT_S = 0.25  # a refill takes ~40 ms on 2 idle cores; leave it room
DOCKER_REFILL_WAIT_S = 1.0  # a container's: ~150 ms
BWRAP = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
         "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
         "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p99_index = min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))
    return {"n": len(ordered), "p50": statistics.median(ordered), "p99": ordered[p99_index],
            "min": ordered[0]}


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


class Api:
    """Signed requests over one kept-alive standard-library connection (no httpx overhead)."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str) -> None:
        self.host = endpoint.split("://", 1)[1]
        self.access_key, self.secret_key = access_key, secret_key
        self.conn = http.client.HTTPConnection(self.host, timeout=60)

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else b""
        ctype = "application/json" if data else None
        headers = signed_headers(access_key=self.access_key, secret_key=self.secret_key, api_version=VERSION,
                                 method=method, path_with_query=path, host=self.host, content_type=ctype,
                                 body=data, now=datetime.now(UTC))
        headers["Host"] = self.host
        if ctype:
            headers["Content-Type"] = ctype
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    data_dir: Path, pool_size: int | None, backend: str | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    port = free_port()
    bai = Path(sys.executable).with_name("bai")
    environ = dict(os.environ)
    environ["BAI_MANAGER_DEFAULT_RATE_LIMIT"] = "1000000"  # the admin keypair's: the bench makes ~10⁴ requests
    if pool_size is not None:
        environ["BAI_AGENT_POOL_SIZE"] = str(pool_size)
    # the server's log: BAI_BENCH_LOG names a file for it (appended), else it is dropped
    with open(os.environ.get("BAI_BENCH_LOG", os.devnull), "a") as log:
        argv = [str(bai), "server", "--data-dir", str(data_dir), "--port", str(port)]
        if backend:
            argv += ["--backend", backend]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=environ)
    env_file = data_dir / "client.env"
    for _ in range(300):
        if env_file.exists():
            break
        time.sleep(0.05)
    env = dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines())
    return proc, env


def bench_api(
    creates: int, execs: int, pooled: bool = True, backend: str | None = None
) -> dict[str, dict[str, float]]:
    """Create → RUNNING (and, when ``execs``, the exec round trip) against a fresh server;
    a ``backend``'s figures are named with its prefix ("docker_api_create_ready")."""
    prefix = f"{backend}_" if backend else ""
    with tempfile.TemporaryDirectory(prefix="bai-bench-") as tmp:
        proc, env = start_server(Path(tmp), None if pooled else 0, backend)
        try:
            api = Api(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"])
            # warm up the code paths once
            api.call("POST", "/session", {"image": "python", "name": "bench-warm"})
            api.call("POST", "/session/bench-warm", {"mode": "query", "code": "1+1"})

            def one_exec() -> None:
                status, body = api.call("POST", "/session/bench-warm", {"mode": "query", "code": "1+1"})
                assert status == 200 and body["result"]["status"] == "finished", body  # type: ignore[index]

            def creates_after(wait: Callable[[float], None], tag: str) -> list[float]:
                samples = []
                for i in range(creates):
                    if pooled:  # a container's refill takes longer than a local sandbox's
                        wait(DOCKER_REFILL_WAIT_S if backend == "docker" else POOL_REFILL_WAIT_S)
                    start = time.perf_counter()
                    status, body = api.call("POST", "/session", {"image": "python", "name": f"bench-{tag}{i}"})
                    samples.append((time.perf_counter() - start) * 1000)
                    assert status == 201 and body["status"] == "RUNNING", body  # type: ignore[index]
                    api.call("DELETE", f"/session/bench-{tag}{i}")
                return samples

            def busy(seconds: float) -> None:
                """Wait while the server serves executes: it is never idle before a create."""
                until = time.perf_counter() + seconds
                while time.perf_counter() < until:
                    one_exec()
                    time.sleep(0.002)

            create_ms = creates_after(time.sleep, "")
            busy_ms = creates_after(busy, "busy-") if pooled else []

            exec_ms: list[float] = []
            if execs:
                timed(one_exec, 20)  # warm-up
                exec_ms = timed(one_exec, execs)
            api.call("DELETE", "/session/bench-warm")
        finally:
            proc.terminate()
            proc.wait(30)
    if not pooled:
        return {f"{prefix}api_create_ready_cold": percentiles(create_ms)}
    return {
        f"{prefix}api_create_ready": percentiles(create_ms),
        f"{prefix}api_create_ready_busy": percentiles(busy_ms),
        f"{prefix}api_exec_1plus1": percentiles(exec_ms),
    }


DOCKER = "/usr/bin/docker"  # Debian's client (docs/images.md)
DOCKER_IMAGE = "bai/python:3.11"


def bench_docker(creates: int, execs: int, spawns: int) -> dict[str, dict[str, float]]:
    """The docker backend through the API, and the ``docker run`` baseline."""
    def docker_run() -> None:
        subprocess.run([DOCKER, "run", "--rm", DOCKER_IMAGE, "python3", "-c", "pass"], check=True)

    docker_run()  # warm the engine's caches
    out = {"docker_run_python3_c_pass": percentiles(timed(docker_run, spawns))}
    out.update(bench_api(creates, execs, backend="docker"))
    out.update(bench_api(creates, 0, pooled=False, backend="docker"))
    return out


def docker_report(results: dict[str, dict[str, float]]) -> list[str]:
    """The docker backend's targets (issue 5), from ``bench_docker``'s figures."""
    if "docker_api_create_ready" not in results:
        return []
    pooled = results["docker_api_create_ready"]["p50"]
    cold = results["docker_api_create_ready_cold"]["p50"]
    baseline = results["docker_run_python3_c_pass"]["p50"]
    exec_gap = results["docker_api_exec_1plus1"]["p50"] - results["api_exec_1plus1"]["p50"]
    return [
        "",
        "Docker backend (p50):",
        f"- pooled create → ready: {pooled:.2f} ms (target ≤ 30 ms)",
        f"- cold create → ready / docker run --rm {DOCKER_IMAGE} python3 -c pass: {cold / baseline:.2f}× "
        f"({cold:.1f} / {baseline:.1f} ms; target ≤ 1.3×)",
        f"- exec 1+1, docker − local: {exec_gap:+.3f} ms (target within 1 ms)",
    ]


def admin_api(env: dict[str, str]) -> Api:
    return Api(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"])


def bench_sustained(env: dict[str, str], seconds: float, workers: int, server_pid: int) -> dict[str, dict[str, float]]:
    """Create + destroy cycles per second, WORKERS clients in parallel, and the CPU per cycle."""
    create_ms: list[float] = []
    destroy_ms: list[float] = []
    failures: list[object] = []
    deadline = time.monotonic() + seconds

    def worker(index: int) -> None:
        api = admin_api(env)
        i = 0
        while time.monotonic() < deadline and not failures:
            name = f"sus-{index}-{i}"
            t0 = time.perf_counter()
            status, body = api.call("POST", "/session", {"image": "python", "name": name})
            t1 = time.perf_counter()
            if status != 201:
                failures.append(body)
                return
            status, body = api.call("DELETE", f"/session/{name}")
            t2 = time.perf_counter()
            if status != 200:
                failures.append(body)
                return
            create_ms.append((t1 - t0) * 1000)
            destroy_ms.append((t2 - t1) * 1000)
            i += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    cpu_before, clients_before, machine_before = tree_ms(server_pid), own_cpu_ms(), machine_busy_ms()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu = (tree_ms(server_pid) - cpu_before, own_cpu_ms() - clients_before, machine_busy_ms() - machine_before)
    assert not failures, failures[0]
    cycles = len(create_ms)
    server_ms, all_ms, machine_ms = cpu[0] / cycles, (cpu[0] + cpu[1]) / cycles, cpu[2] / cycles
    return {
        "sustained_cycles_per_s": single(cycles, cycles / elapsed),
        "sustained_create": percentiles(create_ms),
        "sustained_destroy": percentiles(destroy_ms),
        "sustained_cpu_ms_per_cycle": single(cycles, server_ms),
        "sustained_cpu_ms_per_cycle_all": single(cycles, all_ms),
        "sustained_cycles_per_s_cpu_bound": single(cycles, (os.cpu_count() or 1) * 1000 / all_ms),
        "sustained_machine_ms_per_cycle": single(cycles, machine_ms),
    }


def single(n: int, value: float) -> dict[str, float]:
    """A figure that is one value, in the shape of ``percentiles``."""
    return {"n": n, "p50": value, "p99": value, "min": 0.0}


def own_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def bench_idle(env: dict[str, str], n: int) -> dict[str, dict[str, float]]:
    """The memory of N idle sessions: their cgroups' sum, and the host's view."""
    admin = admin_api(env)
    status, keypair = admin.call("POST", "/admin/keypairs", {"user_id": "bench-idle", "concurrency_limit": n + 10})
    assert status == 201, keypair
    api = Api(env["BACKEND_ENDPOINT"], keypair["access_key"], keypair["secret_key"])  # type: ignore[index]
    # small slots, so that N sessions fit the agent's schedulable capacity of a 2-core box
    config = {"resources": {"cpu": "0.02", "mem": "128m"}}
    available_before = mem_available()
    names = [f"idle-{i}" for i in range(n)]
    try:
        for name in names:
            status, body = api.call("POST", "/session", {"image": "python", "name": name, "config": config})
            assert status == 201 and body["status"] == "RUNNING", body  # type: ignore[index]
        time.sleep(2.0)  # let the pool's refills and the sessions settle
        available_after = mem_available()
        per_session = []
        for name in names:
            status, info = api.call("GET", f"/session/{name}")
            assert status == 200, info
            per_session.append(int(info["lastStat"]["mem"]["current"]))  # type: ignore[index]
    finally:
        for name in names:
            api.call("DELETE", f"/session/{name}")
    total = sum(per_session)
    host_drop = max(0, available_before - available_after)
    mib = [b / 2**20 for b in per_session]
    return {
        "idle_session_cgroup_mib": percentiles(mib),
        "idle_sessions_per_gib_cgroup": {"n": n, "p50": n * 2**30 / total, "p99": n * 2**30 / total, "min": 0.0},
        "idle_sessions_per_gib_host": {"n": n, "p50": n * 2**30 / host_drop if host_drop else float("inf"),
                                       "p99": 0.0, "min": 0.0},
    }


def bench_load(seconds: float, workers: int, idle: int, pooled: bool = True) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bai-bench-") as tmp:
        proc, env = start_server(Path(tmp), None if pooled else 0)
        try:
            warm = admin_api(env)
            warm.call("POST", "/session", {"image": "python", "name": "bench-warm"})
            warm.call("DELETE", "/session/bench-warm")
            results: dict[str, dict[str, float]] = {}
            if seconds > 0:
                results.update(bench_sustained(env, seconds, workers, proc.pid))
            if idle > 0:
                time.sleep(1.0)
                results.update(bench_idle(env, idle))
        finally:
            proc.terminate()
            proc.wait(60)
    return results


def bench_baselines(n: int, kernels: int) -> dict[str, dict[str, float]]:
    python = "/usr/bin/python3"
    out = {
        "python3_c_pass": percentiles(timed(lambda: subprocess.run([python, "-c", "pass"], check=True), n)),
        "bwrap_python3_c_pass": percentiles(
            timed(lambda: subprocess.run([*BWRAP, python, "-c", "pass"], check=True), n)),
    }
    if kernels:
        out.update(bench_jupyter(kernels))
    return out


def bench_jupyter(n: int) -> dict[str, dict[str, float]]:
    from jupyter_client.manager import start_new_kernel

    starts, execs, memory = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        km, kc = start_new_kernel(kernel_name="python3")
        starts.append((time.perf_counter() - t0) * 1000)
        memory.append(process_pss(km.provisioner.process.pid) / 2**20)  # type: ignore[union-attr]
        for _ in range(20):
            t1 = time.perf_counter()
            kc.execute_interactive("1+1", timeout=30, output_hook=lambda msg: None)
            execs.append((time.perf_counter() - t1) * 1000)
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return {"jupyter_kernel_start": percentiles(starts), "jupyter_exec_1plus1": percentiles(execs),
            "jupyter_kernel_idle_pss_mib": percentiles(memory)}


def process_pss(pid: int) -> int:
    """Proportional set size of one process, bytes (what it alone costs the host)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss for pid {pid}")


LOAD_FIGURES = {  # name → (unit, whether the figure is a single value rather than a distribution)
    "sustained_cycles_per_s": ("cycles/s", True),
    "sustained_cycles_per_s_cold": ("cycles/s", True),
    "sustained_cpu_ms_per_cycle": ("ms of CPU (server and below)", True),
    "sustained_cpu_ms_per_cycle_all": ("ms of CPU (with the clients)", True),
    "sustained_cycles_per_s_cpu_bound": ("cycles/s (CPUs / CPU per cycle)", True),
    "sustained_machine_ms_per_cycle": ("ms of every CPU's busy time", True),
    "sustained_cpu_ms_per_cycle_cold": ("ms of CPU (server and below)", True),
    "idle_sessions_per_gib_cgroup": ("sessions/GiB", True),
    "idle_sessions_per_gib_host": ("sessions/GiB", True),
    "idle_session_cgroup_mib": ("MiB", False),
    "jupyter_kernel_idle_pss_mib": ("MiB", False),
}


def report(results: dict[str, dict[str, float]]) -> str:
    lines = ["| measurement | n | p50 ms | p99 ms |", "|---|---|---|---|"]
    for name, r in results.items():
        if name not in LOAD_FIGURES:
            lines.append(f"| {name} | {int(r['n'])} | {r['p50']:.2f} | {r['p99']:.2f} |")
    load = [name for name in LOAD_FIGURES if name in results]
    if load:
        lines += ["", "| load figure | n | value (p50) | p99 | unit |", "|---|---|---|---|---|"]
        for name in load:
            unit, single = LOAD_FIGURES[name]
            r = results[name]
            p99 = "" if single else f"{r['p99']:.2f}"
            lines.append(f"| {name} | {int(r['n'])} | {r['p50']:.2f} | {p99} | {unit} |")
    create = results["api_create_ready"]["p50"]
    lines.append("")
    lines.append("Ratios (p50):")
    if "api_create_ready_cold" in results:
        cold = results["api_create_ready_cold"]
        lines.append(f"- create → ready, cold / pooled: {cold['p50'] / create:.2f}× "
                     f"(p99: {cold['p99'] / results['api_create_ready']['p99']:.2f}×)")
    if "api_create_ready_busy" in results:
        busy = results["api_create_ready_busy"]["p50"]
        lines.append(f"- pooled create → ready, the server busy / idle before each create: {busy / create:.2f}×")
    for base in ("python3_c_pass", "bwrap_python3_c_pass", "jupyter_kernel_start"):
        if base in results:
            lines.append(f"- pooled create → ready / {base}: {create / results[base]['p50']:.2f}×")
            if "api_create_ready_cold" in results:
                cold_p50 = results["api_create_ready_cold"]["p50"]
                lines.append(f"- cold create → ready / {base}: {cold_p50 / results[base]['p50']:.2f}×")
    if "jupyter_exec_1plus1" in results:
        ratio = results["api_exec_1plus1"]["p50"] / results["jupyter_exec_1plus1"]["p50"]
        lines.append(f"- exec 1+1 through the API / Jupyter execute: {ratio:.2f}×")
    lines += load_ratios(results)
    lines += docker_report(results)
    return "\n".join(lines)


def load_ratios(results: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    rate = results.get("sustained_cycles_per_s", {}).get("p50")
    if rate:
        if "sustained_cycles_per_s_cold" in results:
            cold = results["sustained_cycles_per_s_cold"]["p50"]
            lines.append(f"- sustained create+destroy, pooled / cold: {rate / cold:.2f}×")
        if "jupyter_kernel_start" in results:
            kernels_per_s = 1000 / results["jupyter_kernel_start"]["p50"]
            lines.append(f"- sustained create+destroy / Jupyter kernel starts per second ({kernels_per_s:.2f}): "
                         f"{rate / kernels_per_s:.1f}×")
    per_gib = results.get("idle_sessions_per_gib_cgroup", {}).get("p50")
    if per_gib and "jupyter_kernel_idle_pss_mib" in results:
        kernels_per_gib = 1024 / results["jupyter_kernel_idle_pss_mib"]["p50"]
        lines.append(f"- idle sessions per GiB / idle Jupyter kernels per GiB ({kernels_per_gib:.1f}): "
                     f"{per_gib / kernels_per_gib:.1f}×")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=100)
    parser.add_argument("--execs", type=int, default=1000)
    parser.add_argument("--spawns", type=int, default=50)
    parser.add_argument("--kernels", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="sustained create+destroy duration")
    parser.add_argument("--workers", type=int, default=4, help="parallel clients for the sustained run")
    parser.add_argument("--idle", type=int, default=200, help="idle sessions whose memory is measured")
    parser.add_argument("--docker", action="store_true", help="measure the docker backend too")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = bench_baselines(args.spawns, args.kernels)
    results.update(bench_api(args.creates, args.execs))
    results.update(bench_api(args.creates, 0, pooled=False))
    if args.docker:
        results.update(bench_docker(args.creates, args.execs, args.spawns))
    results.update(bench_load(args.seconds, args.workers, args.idle))
    if args.seconds > 0:
        cold = bench_load(args.seconds, args.workers, 0, pooled=False)
        results["sustained_cycles_per_s_cold"] = cold["sustained_cycles_per_s"]
        results["sustained_cpu_ms_per_cycle_cold"] = cold["sustained_cpu_ms_per_cycle"]
    print(f"# bai benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs\n")
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
