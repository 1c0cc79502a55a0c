"""The foundation benchmark: session create → ready and the exec round trip of
``1+1``, through the full API (a real ``bai server`` subprocess, signed HTTP
requests over one kept-alive connection), with baselines measured in the same
run: a plain ``python3 -c pass`` spawn, a bare ``bwrap … python3 -c pass``, and a
Jupyter kernel start (jupyter_client).

Create → ready is measured twice: served from the warm pool (the default; between
two creates the bench waits POOL_REFILL_WAIT_S so each one finds a ready sandbox),
and cold, by a second server started with ``BAI_AGENT_POOL_SIZE=0``.

    ./dev bench [--creates N] [--execs N] [--kernels N] [--json PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bai.common.signing import signed_headers

VERSION = "v8.20240915"
POOL_REFILL_WAIT_S = 0.25  # a refill takes ~40 ms on 2 idle cores; leave it room
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


def start_server(data_dir: Path, pool_size: int | None) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    port = free_port()
    bai = Path(sys.executable).with_name("bai")
    environ = dict(os.environ)
    if pool_size is not None:
        environ["BAI_AGENT_POOL_SIZE"] = str(pool_size)
    proc = subprocess.Popen([str(bai), "server", "--data-dir", str(data_dir), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(os.environ.get("BAI_BENCH_LOG", os.devnull), "w"), env=environ)
    env_file = data_dir / "client.env"
    for _ in range(300):
        if env_file.exists():
            break
        time.sleep(0.05)
    env = dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines())
    return proc, env


def bench_api(creates: int, execs: int, pooled: bool = True) -> dict[str, dict[str, float]]:
    """Create → RUNNING (and, when ``execs``, the exec round trip) against a fresh server."""
    with tempfile.TemporaryDirectory(prefix="bai-bench-") as tmp:
        proc, env = start_server(Path(tmp), None if pooled else 0)
        try:
            api = Api(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"])
            # warm up the code paths once
            api.call("POST", "/session", {"image": "python", "name": "bench-warm"})
            api.call("POST", "/session/bench-warm", {"mode": "query", "code": "1+1"})
            create_ms = []
            for i in range(creates):
                if pooled:
                    time.sleep(POOL_REFILL_WAIT_S)
                start = time.perf_counter()
                status, body = api.call("POST", "/session", {"image": "python", "name": f"bench-{i}"})
                create_ms.append((time.perf_counter() - start) * 1000)
                assert status == 201 and body["status"] == "RUNNING", body  # type: ignore[index]
                api.call("DELETE", f"/session/bench-{i}")

            def one_exec() -> None:
                status, body = api.call("POST", "/session/bench-warm", {"mode": "query", "code": "1+1"})
                assert status == 200 and body["result"]["status"] == "finished", body  # type: ignore[index]

            exec_ms: list[float] = []
            if execs:
                timed(one_exec, 20)  # warm-up
                exec_ms = timed(one_exec, execs)
            api.call("DELETE", "/session/bench-warm")
        finally:
            proc.terminate()
            proc.wait(30)
    if not pooled:
        return {"api_create_ready_cold": percentiles(create_ms)}
    return {"api_create_ready": percentiles(create_ms), "api_exec_1plus1": percentiles(exec_ms)}


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

    starts, execs = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        km, kc = start_new_kernel(kernel_name="python3")
        starts.append((time.perf_counter() - t0) * 1000)
        for _ in range(20):
            t1 = time.perf_counter()
            kc.execute_interactive("1+1", timeout=30, output_hook=lambda msg: None)
            execs.append((time.perf_counter() - t1) * 1000)
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return {"jupyter_kernel_start": percentiles(starts), "jupyter_exec_1plus1": percentiles(execs)}


def report(results: dict[str, dict[str, float]]) -> str:
    lines = ["| measurement | n | p50 ms | p99 ms |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {int(r['n'])} | {r['p50']:.2f} | {r['p99']:.2f} |")
    create = results["api_create_ready"]["p50"]
    lines.append("")
    lines.append("Ratios (p50):")
    if "api_create_ready_cold" in results:
        cold = results["api_create_ready_cold"]
        lines.append(f"- create → ready, cold / pooled: {cold['p50'] / create:.2f}× "
                     f"(p99: {cold['p99'] / results['api_create_ready']['p99']:.2f}×)")
    for base in ("python3_c_pass", "bwrap_python3_c_pass", "jupyter_kernel_start"):
        if base in results:
            lines.append(f"- pooled create → ready / {base}: {create / results[base]['p50']:.2f}×")
            if "api_create_ready_cold" in results:
                cold_p50 = results["api_create_ready_cold"]["p50"]
                lines.append(f"- cold create → ready / {base}: {cold_p50 / results[base]['p50']:.2f}×")
    if "jupyter_exec_1plus1" in results:
        ratio = results["api_exec_1plus1"]["p50"] / results["jupyter_exec_1plus1"]["p50"]
        lines.append(f"- exec 1+1 through the API / Jupyter execute: {ratio:.2f}×")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=100)
    parser.add_argument("--execs", type=int, default=1000)
    parser.add_argument("--spawns", type=int, default=50)
    parser.add_argument("--kernels", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = bench_baselines(args.spawns, args.kernels)
    results.update(bench_api(args.creates, args.execs))
    results.update(bench_api(args.creates, 0, pooled=False))
    print(f"# bai benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs\n")
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
