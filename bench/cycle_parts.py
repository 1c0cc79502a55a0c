"""CPU of the parts of a sandbox's create + destroy, each measured on its own: what
``bench.cycle_cpu`` sums, taken apart, without the server or the other parts around.

    .venv/bin/python -m bench.cycle_parts [-n 40] [--rounds 3] [--src TREE] [--python /usr/bin/python3]

Each part runs ``n`` times per round, the parts interleaved round by round so that the
load of a shared machine falls on all of them alike; printed: the median over the
rounds of the ms of CPU per run (user + system, of this process for the in-process
parts, of the children for the others: ``getrusage``), which the machine's other work
inflates less than it does the wall clock. Kernel work deferred to kernel threads (a
network namespace's teardown, the loop device's I/O) is in no part.

- ``interpreter``, ``interpreter -S``: ``python3 -I [-S] -c pass``, the runner's
  interpreter started and ended with nothing to do (``-S``: without ``site``);
- ``bwrap, /etc files on fds`` and ``bwrap, /etc files in the view``: bwrap with the
  sandbox's command line (bai.agent.backends.local.bwrap, an /etc view made as the
  backend makes it, no seccomp program) around ``/bin/true``, less ``/bin/true`` started
  the same way (a fork of this process and an exec): the namespaces, the mounts, and
  their teardown; the synthetic passwd, group and hosts from pipes (before
  2026-12-08) or written into the view;
- ``runner``: bai.runner from ``--src`` started (without bwrap), to its Ready, told to
  shut down, and reaped with its REPL child (bench.runner_start.one_start);
- ``scratch <kind>``: ScratchDisks.create + remove (in this process; the kernel's I/O
  threads not counted), ``hostfile`` and ``memory``;
- ``cgroup``: a session's cgroup as LocalSandbox makes and removes it: create with
  limits, the OOM watch, the run meter, the join files opened and closed, the final
  stats, remove (needs writable cgroups; left out without).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from bai.agent import cgroups
from bai.agent.backends.local import bwrap
from bai.agent.backends.local.etc_view import EtcView
from bai.agent.scratch import open_disks
from bench.runner_start import one_start

REPO_SRC = Path(__file__).resolve().parents[1] / "src"
TRUE = "/bin/true"
AGENT_ID = "bench-parts"  # the cgroups' parent: bai/bench-parts


def children_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def self_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000


def per_run(clock: Callable[[], float], once: Callable[[], None], n: int) -> float:
    before = clock()
    for _ in range(n):
        once()
    return (clock() - before) / n


def fork_exec(argv: list[str], fds: list[int]) -> None:
    """Start ``argv`` with ``fds`` on 4, 5... (bwrap's info fd first), wait for it."""
    pid = os.fork()
    if pid == 0:  # the child: dup above the targets first, so no dup2 overwrites a source
        try:
            high = [os.dup2(fd, 100 + i) for i, fd in enumerate(fds)]
            for target, fd in enumerate(high, start=bwrap.INFO_FD):
                os.dup2(fd, target)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    for fd in fds:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"{argv[0]} failed ({status:#x})")


def data_pipe(data: bytes) -> int:
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return read_end


class Bwrap:
    """bwrap with the sandbox's command line around /bin/true."""

    def __init__(self, work: Path, runner_dir: Path) -> None:
        (work / "scratch").mkdir()
        self.view = EtcView(work / "etc", bwrap.ETC_ENTRIES, bwrap.etc_files())
        etc = self.view.refresh()
        self.argv = {}
        for etc_data in (True, False):
            argv = bwrap.SandboxCommand(
                bwrap="/usr/bin/bwrap", layout=bwrap.host_layout(etc_view=etc), scratch=work / "scratch",
                runner_dir=runner_dir, runner_python=TRUE, engine="python", environ={}, tmp_size=64 * 2**20,
                seccomp=False, etc_data=etc_data,
            ).argv()  # fmt: skip
            self.argv[etc_data] = [*argv[: argv.index("--")], "--", TRUE]

    def run(self, etc_data: bool) -> None:
        info = os.open(os.devnull, os.O_WRONLY)
        data = [data_pipe(chunk) for chunk in bwrap.etc_files().values()] if etc_data else []
        fork_exec(self.argv[etc_data], [info, *data])


def cgroup_cycle(driver: cgroups.CgroupDriver, limits: cgroups.Limits, counter: list[int]) -> None:
    counter[0] += 1
    cgroup = driver.create(f"_parts-{os.getpid()}-{counter[0]}", limits)
    watch = driver.oom_watch(cgroup)
    meter = driver.open_meter(cgroup)
    cgroup.open_procs()
    cgroup.close_procs()
    driver.stats(cgroup)
    meter.close()
    if watch is not None:
        os.close(watch)
    driver.remove(cgroup)


def parts(work: Path, src: str, python: str) -> dict[str, Callable[[int], float]]:
    sandbox = Bwrap(work, Path(src) / "bai" / "runner")
    (work / "scratch-root").mkdir()
    (work / "images").mkdir()
    disks = {kind: open_disks(kind, work / "scratch-root", work / "images", 2**30) for kind in ("hostfile", "memory")}
    names = iter(range(10**9))

    def scratch(kind: str) -> Callable[[int], float]:
        def once() -> None:
            disks[kind].remove(disks[kind].create(f"p{next(names)}", None, 2000, 2000))
        return lambda n: per_run(self_ms, once, n)

    out: dict[str, Callable[[int], float]] = {
        "interpreter": lambda n: per_run(children_ms, lambda: fork_exec([python, "-I", "-c", "pass"], []), n),
        "interpreter -S": lambda n: per_run(children_ms, lambda: fork_exec([python, "-I", "-S", "-c", "pass"], []), n),
        "/bin/true": lambda n: per_run(children_ms, lambda: fork_exec([TRUE], []), n),
        "bwrap + true, /etc files on fds": lambda n: per_run(children_ms, lambda: sandbox.run(True), n),
        "bwrap + true, /etc files in the view": lambda n: per_run(children_ms, lambda: sandbox.run(False), n),
        "runner": lambda n: statistics.mean(one_start(python, src)[1] for _ in range(n)),
        "scratch hostfile": scratch("hostfile"),
        "scratch memory": scratch("memory"),
    }
    driver = cgroups.detect_driver(AGENT_ID)
    if driver is not None:
        limits = cgroups.Limits(Decimal(1), 2**30, 1024)
        counter = [0]
        out["cgroup"] = lambda n: per_run(self_ms, lambda: cgroup_cycle(driver, limits, counter), n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=40, help="runs of each part per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", default=str(REPO_SRC), help="the tree whose bai.runner is started")
    parser.add_argument("--python", default="/usr/bin/python3", help="the sandboxes' interpreter")
    parser.add_argument("--only", action="append", help="measure only the parts whose name starts so (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bai-parts-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        measures = parts(work, args.src, args.python)
        if args.only:
            measures = {name: m for name, m in measures.items() if name.startswith(tuple(args.only))}
        results: dict[str, list[float]] = {name: [] for name in measures}
        try:
            for _ in range(args.rounds):
                for name, measure in measures.items():
                    results[name].append(measure(args.n))
        finally:
            driver = cgroups.detect_driver(AGENT_ID)
            if driver is not None:
                driver.remove_agent_dirs()
    print(f"{args.n} runs x {args.rounds} rounds, {os.cpu_count()} CPUs, {args.python}; ms of CPU per run")
    print("| part | median | min |\n|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} |")
    for etc in ("on fds", "in the view"):
        if "/bin/true" not in results or f"bwrap + true, /etc files {etc}" not in results:
            continue
        true_ms = statistics.median(results["/bin/true"])
        print(f"| bwrap alone, /etc files {etc} (less /bin/true) | "
              f"{statistics.median(results[f'bwrap + true, /etc files {etc}']) - true_ms:.2f} | |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
