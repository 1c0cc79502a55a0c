"""The runner's start-up cost: spawn → ``Ready`` wall time, CPU per start, and the
memory of an idle runner and its REPL child.

The runner is started the way the agent starts it (``python3 -I -c BOOT --fd N
--engine python``, without bwrap) from one or more source trees, interleaved run by
run so that the load of a shared machine falls on all of them alike::

    .venv/bin/python -m bench.runner_start [-n 200] [--python /usr/bin/python3] \\
        [--src /tmp/runner-orig/src --src src [--src src,gc-off]] [--importtime]

Per start: the wall time from just before the spawn to the ``Ready`` frame read,
and the CPU (user + system) of the whole start → ``Ready`` → ``Shutdown`` → exit
cycle from ``getrusage(RUSAGE_CHILDREN)``, which also counts the REPL child (the
runner reaps it before it exits). Memory, on fewer starts: Rss / Pss / private
(Private_Clean + Private_Dirty) / anonymous from ``/proc/<pid>/smaps_rollup`` of the
runner and its REPL child, once the child is idle after ``Ready``, again after two
runs of ``1+1`` (whose round trips are timed too: the first one pays for what the REPL
leaves to its first run), and after a ``gc.collect()`` in the REPL. Reading the
runner's smaps_rollup takes root (the runner makes itself non-dumpable); otherwise
the memory columns read 0.

Standard library only: the frames are read here, not with bai.runner, so that every
source tree is measured by the same client.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import select
import socket
import statistics
import struct
import subprocess
import time
from pathlib import Path

BOOT = "import sys; sys.path.insert(0, %r); from bai.runner.main import main; main()"
# ``--src PATH,gc-off`` starts that tree with the collector off during the imports
# (main() freezes what they made and turns it on).
GC_OFF = "import gc; gc.disable(); "
HEADER = struct.Struct(">I")
REPO_SRC = Path(__file__).resolve().parents[1] / "src"
MEMORY_KEYS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Anonymous")


class Runner:
    """One runner subprocess and our end of its socket."""

    def __init__(self, python: str, src: str) -> None:
        ours, theirs = socket.socketpair()
        self.started = time.perf_counter()
        path, _, variant = src.partition(",")
        boot = (GC_OFF if variant == "gc-off" else "") + BOOT % path
        self.proc = subprocess.Popen(
            [python, "-I", "-c", boot, "--fd", str(theirs.fileno()), "--engine", "python"],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.sock = ours
        self._buf = b""

    def recv(self, timeout: float = 10.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buf) >= HEADER.size:
                (size,) = HEADER.unpack_from(self._buf)
                if len(self._buf) >= HEADER.size + size:
                    payload = self._buf[HEADER.size : HEADER.size + size]
                    self._buf = self._buf[HEADER.size + size :]
                    message: dict[str, object] = json.loads(payload)
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError("no frame from the runner")
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the runner closed its socket")
            self._buf += data

    def send(self, body: dict[str, object]) -> None:
        payload = json.dumps(body).encode()
        self.sock.sendall(HEADER.pack(len(payload)) + payload)

    def run(self, code: str) -> None:
        self.send({"type": "execute", "run_id": "r", "code": code})
        while self.recv().get("type") != "finished":
            pass

    def child_pid(self) -> int | None:
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        pids = text.split()
        return int(pids[0]) if pids else None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send({"type": "shutdown"})
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_start(python: str, src: str) -> tuple[float, float]:
    """(spawn → Ready ms, CPU ms of the whole start → exit cycle)."""
    cpu_before = children_cpu_s()
    runner = Runner(python, src)
    ready = runner.recv()
    wall_ms = (time.perf_counter() - runner.started) * 1000.0
    if ready.get("type") != "ready":
        raise RuntimeError(f"expected ready, got {ready!r}")
    runner.close()
    return wall_ms, (children_cpu_s() - cpu_before) * 1000.0


def smaps(pid: int | None) -> dict[str, int]:
    """The smaps_rollup figures of ``pid`` in KiB (zeros if unreadable)."""
    figures = dict.fromkeys(MEMORY_KEYS, 0)
    if pid is None:
        return figures
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return figures
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in figures:
            figures[key] = int(rest.split()[0])
    return figures


def wait_idle(pid: int | None, timeout: float = 2.0) -> None:
    """Until ``pid`` sleeps and its CPU time stops growing (the REPL child set up)."""
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        fields = stat.rsplit(")", 1)[1].split()
        state, cpu = fields[0], fields[11] + "/" + fields[12]
        if state == "S" and cpu == last:
            return
        last = cpu
        time.sleep(0.02)


def memory_sample(python: str, src: str) -> dict[str, dict[str, int]]:
    runner = Runner(python, src)
    try:
        runner.recv()
        child = runner.child_pid()
        wait_idle(child)
        result = {"runner idle": smaps(runner.proc.pid), "child idle": smaps(child)}
        started = time.perf_counter()
        runner.run("1+1")
        first_us = (time.perf_counter() - started) * 1e6
        started = time.perf_counter()
        runner.run("1+1")
        result["first runs"] = {"first": int(first_us), "second": int((time.perf_counter() - started) * 1e6)}
        wait_idle(child)
        result["runner after 1+1"] = smaps(runner.proc.pid)
        result["child after 1+1"] = smaps(child)
        runner.run("import gc; gc.collect()")  # what a busy session's collector does sooner or later
        wait_idle(child)
        result["runner after gc"] = smaps(runner.proc.pid)
        result["child after gc"] = smaps(child)
    finally:
        runner.close()
    return result


def importtime(python: str, src: str, top: int) -> str:
    """The ``-X importtime`` lines of importing bai.runner.main, by cumulative time."""
    code = f"import sys; sys.path.insert(0, {src.partition(',')[0]!r}); import bai.runner.main"
    proc = subprocess.run([python, "-X", "importtime", "-I", "-c", code], capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = line.split(":", 1)[1].split("|")
        rows.append((int(cumulative_us), int(self_us), name.rstrip()))
    total = sum(self_us for _, self_us, _ in rows)
    rows.sort(reverse=True)
    lines = [f"  {len(rows)} modules imported, self times sum to {total / 1000.0:.1f} ms; top by cumulative:"]
    lines += [f"  {cum / 1000.0:8.2f} ms cum {own / 1000.0:8.2f} ms self  {name}" for cum, own, name in rows[:top]]
    return "\n".join(lines)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="starts per source tree (timing)")
    parser.add_argument("--memory-runs", type=int, default=5, help="starts per source tree (memory)")
    parser.add_argument("--python", default="/usr/bin/python3")
    parser.add_argument(
        "--src", action="append", help="a source tree holding bai/runner (repeatable); PATH,gc-off: see GC_OFF"
    )
    parser.add_argument("--importtime", action="store_true", help="also print -X importtime's top entries")
    args = parser.parse_args()
    sources = args.src or [str(REPO_SRC)]
    version = subprocess.check_output([args.python, "-V"], text=True).strip()
    print(f"python: {args.python} ({version})")
    bare_wall, bare_cpu = bare_spawn(args.python)
    print(f"bare `{args.python} -I -c pass` (n 20): wall p50 {bare_wall:.2f} ms, CPU median {bare_cpu:.2f} ms")
    for src in sources:
        one_start(args.python, src)  # byte-compile, warm the page cache
    walls: dict[str, list[float]] = {src: [] for src in sources}
    cpus: dict[str, list[float]] = {src: [] for src in sources}
    for _ in range(args.n):
        for src in sources:
            wall, cpu = one_start(args.python, src)
            walls[src].append(wall)
            cpus[src].append(cpu)
    for src in sources:
        print(f"\n== {src}")
        wall_p50, wall_p90 = statistics.median(walls[src]), percentile(walls[src], 0.9)
        print(f"spawn → Ready ms (n {args.n}): p50 {wall_p50:.2f}  p90 {wall_p90:.2f}  min {min(walls[src]):.2f}")
        cpu_median, cpu_mean = statistics.median(cpus[src]), statistics.mean(cpus[src])
        print(f"CPU ms per start → Ready → Shutdown → exit: median {cpu_median:.2f}  mean {cpu_mean:.2f}")
        report_memory([memory_sample(args.python, src) for _ in range(args.memory_runs)])
        if args.importtime:
            print(importtime(args.python, src, 15))


def report_memory(samples: list[dict[str, dict[str, int]]]) -> None:
    first = statistics.median(s["first runs"]["first"] for s in samples) / 1000.0
    second = statistics.median(s["first runs"]["second"] for s in samples) / 1000.0
    print(f"  first `1+1` after Ready (child idle) ms: {first:.2f}; the second: {second:.2f}")
    for what in [what for what in samples[0] if what != "first runs"]:
        figures = {key: statistics.median(s[what][key] for s in samples) for key in MEMORY_KEYS}
        private = figures["Private_Clean"] + figures["Private_Dirty"]
        print(
            f"  {what:<17} KiB: Rss {figures['Rss']:6.0f}  Pss {figures['Pss']:6.0f}"
            f"  private {private:6.0f}  anon {figures['Anonymous']:6.0f}"
        )
    pss = statistics.median(s["runner idle"]["Pss"] + s["child idle"]["Pss"] for s in samples)
    # What a session's cgroup is charged for the two, roughly: the runner's anonymous
    # memory (shared copy-on-write with the child until either writes it) plus what the
    # child has made its own; the interpreter's and libraries' file pages are page cache,
    # charged once to whichever cgroup read them first.
    charged = statistics.median(s["runner idle"]["Anonymous"] + s["child idle"]["Private_Dirty"] for s in samples)
    per_gib = 1024 * 1024 / charged if charged else 0
    print(f"  idle runner + child: Pss {pss:.0f} KiB; runner anon + child private dirty {charged:.0f} KiB", end="")
    print(f" → {per_gib:.0f} idle sessions per GiB")
    busy = statistics.median(s["runner after gc"]["Anonymous"] + s["child after gc"]["Private_Dirty"] for s in samples)
    print(f"  after a full collection in the REPL: runner anon + child private dirty {busy:.0f} KiB")


def bare_spawn(python: str) -> tuple[float, float]:
    """(wall p50 ms, CPU median ms) of ``python -I -c pass``."""
    walls, cpus = [], []
    for _ in range(20):
        cpu_before, started = children_cpu_s(), time.perf_counter()
        subprocess.run([python, "-I", "-c", "pass"], check=True)
        walls.append((time.perf_counter() - started) * 1000.0)
        cpus.append((children_cpu_s() - cpu_before) * 1000.0)
    return statistics.median(walls), statistics.median(cpus)


if __name__ == "__main__":
    main()
