"""Per-session cgroups: limits, accounting, joining and killing.

One interface (``CgroupDriver``), two drivers chosen by ``detect_driver``:

- ``CgroupV1``: one hierarchy per controller (memory, cpu, cpuacct, pids, blkio),
  found in /proc/self/mounts; memory and memory+swap are both limited so swap
  cannot dodge the limit.
- ``CgroupV2``: the unified hierarchy (memory.max, memory.swap.max, cpu.max,
  pids.max; memory.peak, cpu.stat, io.stat, memory.events; cgroup.kill).

A session's cgroup is ``bai/<agent_id>/<session_id>`` under each hierarchy.
Processes join it from the child side, before exec: ``SessionCgroup.procs_fds``
are opened by the agent (root) and the sandbox's first process writes ``b"0"``
to each (the spawn helper's child, bai.agent.backends.local.spawner, before it drops its
privileges and execs bwrap), which moves the writer itself. So no process of a
sandbox ever runs outside its cgroup. On v1 the file is ``tasks``, not
``cgroup.procs``: the forked child has one thread, and moving a single thread
skips the kernel's global threadgroup lock, whose RCU grace period costs 5-12 ms
per start on an idle host (Linux >= 6.0). On v2 it is ``cgroup.procs``.

Every method here does blocking file I/O on cgroupfs (in-memory, microseconds);
callers keep them off the execute path. The one exception is ``RunMeter``
(``CgroupDriver.open_meter``): per-run CPU time and memory peak through file
descriptors opened once per sandbox, read with ``os.pread`` and reset with
``os.pwrite`` (no path lookup, no open: a few microseconds per run), which the
agent calls on the execute path itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import itertools
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio")
V2_CONTROLLERS = ("memory", "cpu", "pids", "io")


class CgroupError(Exception):
    """A cgroup could not be created, limited, read or removed."""


@dataclass(frozen=True)
class Limits:
    """What one session may use. ``cpu`` in cores (0.5 = half a core)."""

    cpu: Decimal
    mem: int
    pids: int


@dataclass(frozen=True)
class CgroupStats:
    cpu_used_ms: int = 0
    mem_current: int = 0
    mem_peak: int = 0
    oom_kills: int = 0
    io_read: int = 0
    io_write: int = 0


@dataclass
class SessionCgroup:
    """One session's cgroup: one directory per hierarchy (one on v2)."""

    name: str  # relative path, "bai/<agent_id>/<session_id>"
    dirs: list[Path]
    limits: Limits  # as last applied (CgroupDriver.create and apply_limits set it)
    join_file: str = "cgroup.procs"
    procs_fds: list[int] = field(default_factory=list)

    def open_procs(self) -> list[int]:
        """Open each join file for writing, to be handed to the spawn helper.

        The caller closes them (``close_procs``) once the child has started."""
        self.close_procs()
        self.procs_fds = [os.open(d / self.join_file, os.O_WRONLY | os.O_CLOEXEC) for d in self.dirs]
        return self.procs_fds

    def close_procs(self) -> None:
        for fd in self.procs_fds:
            os.close(fd)
        self.procs_fds = []


PeakScope = Literal["run", "session"]


@dataclass(frozen=True)
class RunUsage:
    """What one run used: CPU time of the whole cgroup, and its memory high-water
    mark since the run started (``scope="run"``) or, where the kernel cannot reset
    the mark, since the sandbox started (``scope="session"``)."""

    cpu_ms: float
    mem_peak: int
    mem_peak_scope: PeakScope


class RunMeter:
    """Per-run accounting on kept file descriptors: ``start`` at a run's start,
    ``stop`` at its end. Opened by ``CgroupDriver.open_meter``, one per sandbox, and
    closed by its owner before the cgroup is removed. Reads raise OSError once the
    cgroup is gone.

    ``cpu_ns`` turns the CPU file's text into nanoseconds (v1 ``cpuacct.usage``,
    v2 ``cpu.stat``). ``resets_peak``: a write to ``peak_fd`` restarts the peak
    (v1 ``memory.max_usage_in_bytes``; v2 ``memory.peak`` on Linux >= 6.12, where
    the reset holds for reads through the same descriptor)."""

    def __init__(self, cpu_fd: int, cpu_ns: Callable[[bytes], int], peak_fd: int, *, resets_peak: bool) -> None:
        self._cpu_fd = cpu_fd
        self._cpu_ns = cpu_ns
        self._peak_fd = peak_fd
        self.resets_peak = resets_peak
        self._cpu_at_start = 0
        #: the highest peak read so far: the session's high-water mark, since a reset
        #: on v1 also clears the one memory.max_usage_in_bytes shows to everyone else
        self.session_peak = 0

    def start(self) -> None:
        """Mark a run's start: note the CPU counter, reset the memory peak."""
        self._cpu_at_start = self._cpu_ns(os.pread(self._cpu_fd, 512, 0))
        if self.resets_peak:
            # what was used between runs still counts toward the session's peak
            self.session_peak = max(self.session_peak, int(os.pread(self._peak_fd, 64, 0)))
            os.pwrite(self._peak_fd, b"0", 0)

    def stop(self) -> RunUsage:
        """The usage since ``start``."""
        cpu_ns = self._cpu_ns(os.pread(self._cpu_fd, 512, 0)) - self._cpu_at_start
        peak = int(os.pread(self._peak_fd, 64, 0))
        self.session_peak = max(self.session_peak, peak)
        return RunUsage(cpu_ms=cpu_ns / 1e6, mem_peak=peak, mem_peak_scope="run" if self.resets_peak else "session")

    def close(self) -> None:
        for fd in (self._cpu_fd, self._peak_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _v1_cpu_ns(text: bytes) -> int:
    return int(text)


def _v2_cpu_ns(text: bytes) -> int:
    """``usage_usec N`` is cpu.stat's first line."""
    for line in text.splitlines():
        key, _, value = line.partition(b" ")
        if key == b"usage_usec":
            return int(value) * 1000
    raise OSError(errno.EINVAL, "cpu.stat has no usage_usec")


def _open_meter(cpu_path: Path, cpu_ns: Callable[[bytes], int], peak_path: Path, *, try_reset: bool) -> RunMeter:
    """Open the meter's files; the peak file read-write when ``try_reset`` and a first
    reset works (else read-only: the kernel cannot reset it)."""
    cpu_fd = os.open(cpu_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if try_reset:
            try:
                peak_fd = os.open(peak_path, os.O_RDWR | os.O_CLOEXEC)
            except PermissionError:
                pass
            else:
                try:
                    os.pwrite(peak_fd, b"0", 0)
                except OSError:
                    os.close(peak_fd)
                else:
                    return RunMeter(cpu_fd, cpu_ns, peak_fd, resets_peak=True)
        peak_fd = os.open(peak_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(cpu_fd)
        raise
    return RunMeter(cpu_fd, cpu_ns, peak_fd, resets_peak=False)


class CgroupDriver(ABC):
    """The cgroup operations the local backend needs; one instance per agent."""

    version: str
    join_file = "cgroup.procs"

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self._prepared: set[Path] = set()  # roots whose bai/<agent_id> parent is set up

    def _name(self, session_id: str) -> str:
        return f"bai/{self.agent_id}/{session_id}"

    @abstractmethod
    def roots(self) -> list[Path]:
        """The mount points of the hierarchies this driver uses."""

    def create(self, session_id: str, limits: Limits) -> SessionCgroup:
        """Create (or reuse) a session's cgroup and apply ``limits``. Called by backend create."""
        name = self._name(session_id)
        dirs = []
        try:
            for root in self.roots():
                path = root / name
                if root not in self._prepared:  # once per agent, not per session: syscalls
                    self._prepare_parents(root)
                    self._prepared.add(root)
                try:
                    os.mkdir(path)
                except FileExistsError:
                    pass
                except FileNotFoundError:  # the parent went away since (an operator, a stop)
                    self._prepare_parents(root)
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(path)
                dirs.append(path)
            cgroup = SessionCgroup(name=name, dirs=dirs, limits=limits, join_file=self.join_file)
            self.apply_limits(cgroup, limits)
        except OSError as exc:
            for path in dirs:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise CgroupError(f"cannot set up cgroup {name}: {exc}") from exc
        return cgroup

    def _prepare_parents(self, root: Path) -> None:
        (root / "bai" / self.agent_id).mkdir(parents=True, exist_ok=True)

    def leftovers(self) -> list[str]:
        """Session ids that have a cgroup under this agent (after a crash of a previous agent)."""
        found: set[str] = set()
        for root in self.roots():
            base = root / "bai" / self.agent_id
            if base.is_dir():
                found.update(entry.name for entry in base.iterdir() if entry.is_dir())
        return sorted(found)

    def attach(self, session_id: str, limits: Limits) -> SessionCgroup:
        """A handle on an existing cgroup, for cleaning up leftovers."""
        name = self._name(session_id)
        return SessionCgroup(name=name, dirs=[root / name for root in self.roots()], limits=limits)

    @abstractmethod
    def apply_limits(self, cgroup: SessionCgroup, limits: Limits) -> None:
        """Set memory (without swap), CPU quota and PID limits."""

    @abstractmethod
    def stats(self, cgroup: SessionCgroup) -> CgroupStats:
        """Usage so far. Called by the backend's stats and destroy (before ``remove``)."""

    @abstractmethod
    def memory_current(self, cgroup: SessionCgroup) -> int:
        """Bytes charged now: one file read (a pooled sandbox's claim checks it)."""

    @abstractmethod
    def oom_kills(self, cgroup: SessionCgroup) -> int:
        """How many processes the OOM killer has killed in this cgroup."""

    @abstractmethod
    def open_meter(self, cgroup: SessionCgroup) -> RunMeter:
        """The per-run meter of a cgroup (its own file descriptors; the caller closes
        it). Called by the local sandbox once per start. Raises OSError."""

    @abstractmethod
    def reset_peak(self, cgroup: SessionCgroup) -> None:
        """Restart the memory peak from the current usage (for a sandbox handed to a new user)."""

    @abstractmethod
    def oom_watch(self, cgroup: SessionCgroup) -> int | None:
        """A file descriptor that turns readable when an OOM kill happens, or None.

        The caller registers it with its event loop, reads it when readable
        (``drain_oom_watch``) and closes it."""

    def drain_oom_watch(self, fd: int) -> bool:
        """Consume the watch's readiness; True when an OOM event had happened."""
        try:
            return bool(os.read(fd, 4096))
        except (BlockingIOError, InterruptedError):
            return False

    def pids(self, cgroup: SessionCgroup) -> list[int]:
        """Host pids of the processes in the cgroup."""
        try:
            text = _read(cgroup.dirs[0] / "cgroup.procs")
        except FileNotFoundError:
            return []
        return [int(line) for line in text.split()]

    def kill_round(self, cgroup: SessionCgroup) -> bool:
        """Send SIGKILL to every process in the cgroup once; True when it was already empty.

        Each pid is pinned with a pidfd and signalled only if it is still listed
        after the pidfd was opened, so a pid reused outside the cgroup is never hit."""
        listed = self.pids(cgroup)
        if not listed:
            return True
        pinned: dict[int, int] = {}
        try:
            for pid in listed:
                with contextlib.suppress(ProcessLookupError):
                    pinned[pid] = os.pidfd_open(pid)
            still = set(self.pids(cgroup))
            for pid, pidfd in pinned.items():
                if pid in still:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            for pidfd in pinned.values():
                os.close(pidfd)
        return False

    def remove(self, cgroup: SessionCgroup) -> None:
        """Remove the (empty) cgroup directories. Raises CgroupError if busy for over a second."""
        cgroup.close_procs()
        deadline = time.monotonic() + 1.0
        for path in cgroup.dirs:
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove {path}: {exc}") from exc
                    self.kill_round(cgroup)
                    time.sleep(0.005)

    def remove_if_stale(self, session_id: str, min_age_s: float) -> bool:
        """Remove a session cgroup that is empty and older than ``min_age_s`` (left by
        an agent that was killed); never kills. True when it was removed."""
        cgroup = self.attach(session_id, Limits(Decimal(0), 0, 0))
        try:
            age = time.time() - cgroup.dirs[0].stat().st_ctime
        except FileNotFoundError:
            return False
        if age < min_age_s or self.pids(cgroup):
            return False
        removed = True
        for path in cgroup.dirs:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:  # a process joined after all: someone's live session
                removed = False
        return removed

    def remove_agent_dirs(self) -> None:
        """Remove ``bai/<agent_id>`` when no session is left. Called by backend stop."""
        self._prepared.clear()
        for root in self.roots():
            with contextlib.suppress(OSError):
                (root / "bai" / self.agent_id).rmdir()


def _read(path: Path) -> str:
    """A cgroup file's text: an open, reads to the end, a close (no buffered text layer:
    the agent reads a dozen of these per session)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _write(path: Path, text: str) -> None:
    """Write ``text`` to a cgroup file in one write(2), as the kernel wants a control
    value (opened as ``Path.write_text`` opens it, without its buffered text layer)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read_int(path: Path, default: int = 0) -> int:
    try:
        return int(_read(path).split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return default


def _read_keyed(path: Path) -> dict[str, int]:
    """``key value`` lines (memory.events, cpu.stat, memory.oom_control)."""
    out: dict[str, int] = {}
    try:
        text = _read(path)
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_blkio(text: str) -> tuple[int, int]:
    """v1 ``blkio.throttle.io_service_bytes``: ``MAJ:MIN Read N`` lines → (read, write)."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                read += int(parts[2])
            elif parts[1] == "Write":
                write += int(parts[2])
    return read, write


def parse_io_stat(text: str) -> tuple[int, int]:
    """v2 ``io.stat``: ``MAJ:MIN rbytes=N wbytes=N ...`` lines → (read, write)."""
    read = write = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                write += int(value)
    return read, write


def find_v1_mounts(mounts_text: str) -> dict[str, Path]:
    """Controller name → mount point, from /proc/self/mounts."""
    found: dict[str, Path] = {}
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] != "cgroup":
            continue
        for option in parts[3].split(","):
            if option in V1_CONTROLLERS and option not in found:
                found[option] = Path(parts[1])
    return found


UNREACHABLE_BPS = 2**40  # 1 TiB/s: a throttle rule no disk reaches


def block_devices(sys_block: Path = Path("/sys/block")) -> list[str]:
    """``MAJ:MIN`` of the host's whole disks (not loop or ram devices)."""
    found = []
    try:
        entries = sorted(sys_block.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name.startswith(("loop", "ram", "zram")):
            continue
        with contextlib.suppress(OSError):
            found.append((entry / "dev").read_text().strip())
    return found


class CgroupV1(CgroupDriver):
    version = "v1"
    join_file = "tasks"  # see the module docstring

    def __init__(self, agent_id: str, mounts: dict[str, Path], disks: list[str] | None = None) -> None:
        super().__init__(agent_id)
        # v1 counts a cgroup's I/O bytes only where a throttle rule exists (and Linux
        # >= 6.9 turns blk-throttle on only once one is set): an unreachable one per disk
        self.disks = block_devices() if disks is None else disks
        missing = [c for c in V1_CONTROLLERS if c not in mounts]
        if missing:
            raise CgroupError(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
        self.mounts = mounts
        unique: list[Path] = []
        # memory first: its cgroup.procs is the one pids() reads
        for controller in V1_CONTROLLERS:
            if mounts[controller] not in unique:
                unique.append(mounts[controller])
        self._roots = unique

    def roots(self) -> list[Path]:
        return self._roots

    def _dir(self, cgroup: SessionCgroup, controller: str) -> Path:
        return self.mounts[controller] / cgroup.name

    def apply_limits(self, cgroup: SessionCgroup, limits: Limits) -> None:
        memory = self._dir(cgroup, "memory")
        memsw = memory / "memory.memsw.limit_in_bytes"
        current_memsw = _read_int(memsw, default=-1)  # -1: no swap accounting (no such file)
        mem = str(limits.mem)
        if 0 <= current_memsw < limits.mem:
            _write(memsw, mem)  # memsw must stay >= the plain limit
            _write(memory / "memory.limit_in_bytes", mem)
        else:
            _write(memory / "memory.limit_in_bytes", mem)
            if current_memsw >= 0:
                _write(memsw, mem)
        cpu = self._dir(cgroup, "cpu")
        _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        quota = max(1000, int(limits.cpu * CPU_PERIOD_US)) if limits.cpu > 0 else -1
        _write(cpu / "cpu.cfs_quota_us", str(quota))
        _write(self._dir(cgroup, "pids") / "pids.max", str(limits.pids))
        blkio = self._dir(cgroup, "blkio")
        for disk in self.disks:
            for name in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
                with contextlib.suppress(OSError):
                    _write(blkio / name, f"{disk} {UNREACHABLE_BPS}")
        cgroup.limits = limits

    def stats(self, cgroup: SessionCgroup) -> CgroupStats:
        memory = self._dir(cgroup, "memory")
        blkio = self._dir(cgroup, "blkio")
        try:
            text = _read(blkio / "blkio.throttle.io_service_bytes_recursive")
        except FileNotFoundError:  # kernels without the recursive figures
            try:
                text = _read(blkio / "blkio.throttle.io_service_bytes")
            except FileNotFoundError:
                text = ""
        io_read, io_write = parse_blkio(text)
        return CgroupStats(
            cpu_used_ms=_read_int(self._dir(cgroup, "cpuacct") / "cpuacct.usage") // 1_000_000,
            mem_current=_read_int(memory / "memory.usage_in_bytes"),
            mem_peak=_read_int(memory / "memory.max_usage_in_bytes"),
            oom_kills=self.oom_kills(cgroup),
            io_read=io_read,
            io_write=io_write,
        )

    def memory_current(self, cgroup: SessionCgroup) -> int:
        return _read_int(self._dir(cgroup, "memory") / "memory.usage_in_bytes")

    def oom_kills(self, cgroup: SessionCgroup) -> int:
        return _read_keyed(self._dir(cgroup, "memory") / "memory.oom_control").get("oom_kill", 0)

    def reset_peak(self, cgroup: SessionCgroup) -> None:
        _write(self._dir(cgroup, "memory") / "memory.max_usage_in_bytes", "0")

    def open_meter(self, cgroup: SessionCgroup) -> RunMeter:
        # The RAM peak, as v2's memory.peak (memory.memsw.* would add swap; its limit
        # equals the RAM one here, and a host with no swap shows the same figure).
        return _open_meter(
            self._dir(cgroup, "cpuacct") / "cpuacct.usage",
            _v1_cpu_ns,
            self._dir(cgroup, "memory") / "memory.max_usage_in_bytes",
            try_reset=True,
        )

    def oom_watch(self, cgroup: SessionCgroup) -> int | None:
        memory = self._dir(cgroup, "memory")
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            control = os.open(memory / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _write(memory / "cgroup.event_control", f"{efd} {control}")
            finally:
                os.close(control)
        except OSError:
            os.close(efd)
            return None
        return efd


class CgroupV2(CgroupDriver):
    version = "v2"

    def __init__(self, agent_id: str, root: Path, *, peak_resets: bool | None = None) -> None:
        super().__init__(agent_id)
        self.root = root
        #: memory.peak can be reset by a write (Linux >= 6.12); None: tell from the kernel
        self.peak_resets = kernel_resets_peak(os.uname().release) if peak_resets is None else peak_resets
        available = set((root / "cgroup.controllers").read_text().split())
        missing = [c for c in V2_CONTROLLERS if c not in available]
        if missing:
            raise CgroupError(f"cgroup v2 controllers not available at {root}: {', '.join(missing)}")

    def roots(self) -> list[Path]:
        return [self.root]

    def _prepare_parents(self, root: Path) -> None:
        enable = " ".join(f"+{c}" for c in V2_CONTROLLERS)
        path = root
        for part in ("bai", self.agent_id):
            wanted = set(V2_CONTROLLERS)
            if not wanted <= set((path / "cgroup.subtree_control").read_text().split()):
                (path / "cgroup.subtree_control").write_text(enable)
            path = path / part
            path.mkdir(exist_ok=True)
        if not set(V2_CONTROLLERS) <= set((path / "cgroup.subtree_control").read_text().split()):
            (path / "cgroup.subtree_control").write_text(enable)

    def apply_limits(self, cgroup: SessionCgroup, limits: Limits) -> None:
        path = cgroup.dirs[0]
        _write(path / "memory.max", str(limits.mem))
        swap = path / "memory.swap.max"
        if swap.exists():  # the swap controller
            _write(swap, "0")
        quota = max(1000, int(limits.cpu * CPU_PERIOD_US)) if limits.cpu > 0 else None
        _write(path / "cpu.max", f"{quota if quota else 'max'} {CPU_PERIOD_US}")
        _write(path / "pids.max", str(limits.pids))
        cgroup.limits = limits

    def stats(self, cgroup: SessionCgroup) -> CgroupStats:
        path = cgroup.dirs[0]
        try:
            io_read, io_write = parse_io_stat(_read(path / "io.stat"))
        except FileNotFoundError:
            io_read = io_write = 0
        return CgroupStats(
            cpu_used_ms=_read_keyed(path / "cpu.stat").get("usage_usec", 0) // 1000,
            mem_current=_read_int(path / "memory.current"),
            mem_peak=_read_int(path / "memory.peak"),
            oom_kills=self.oom_kills(cgroup),
            io_read=io_read,
            io_write=io_write,
        )

    def memory_current(self, cgroup: SessionCgroup) -> int:
        return _read_int(cgroup.dirs[0] / "memory.current")

    def oom_kills(self, cgroup: SessionCgroup) -> int:
        return _read_keyed(cgroup.dirs[0] / "memory.events").get("oom_kill", 0)

    def reset_peak(self, cgroup: SessionCgroup) -> None:
        # Linux >= 6.12: any write resets the peak as seen through later reads
        with contextlib.suppress(OSError):
            _write(cgroup.dirs[0] / "memory.peak", "reset")

    def oom_watch(self, cgroup: SessionCgroup) -> int | None:
        return inotify_modify_watch(cgroup.dirs[0] / "memory.events")

    def open_meter(self, cgroup: SessionCgroup) -> RunMeter:
        path = cgroup.dirs[0]
        return _open_meter(path / "cpu.stat", _v2_cpu_ns, path / "memory.peak", try_reset=self.peak_resets)

    def kill_round(self, cgroup: SessionCgroup) -> bool:
        if not self.pids(cgroup):
            return True
        kill = cgroup.dirs[0] / "cgroup.kill"
        if kill.exists():  # Linux >= 5.14
            _write(kill, "1")
            return False
        return super().kill_round(cgroup)


def kernel_resets_peak(release: str) -> bool:
    """Whether a kernel of ``release`` (``uname -r``) resets memory.peak on a write:
    Linux 6.12 made the file writable, the reset holding for the writer's descriptor.
    Before it, the file is read-only, so a run's peak can only be the session's."""
    numbers = []
    for part in release.split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers) >= (6, 12)


_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


def inotify_modify_watch(path: Path) -> int | None:
    """An inotify fd that turns readable when ``path`` is modified (cgroupfs notifies
    on memory.events changes); None where inotify is unavailable."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
    if fd < 0:
        return None
    if int(libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY)) < 0:
        os.close(fd)
        return None
    return fd


def detect_driver(agent_id: str, choice: str = "auto", base: Path = Path("/sys/fs/cgroup")) -> CgroupDriver | None:
    """Pick the driver: v2 when the unified hierarchy at ``base`` has our controllers,
    else v1 when its controllers are mounted; None when ``choice`` is "none".
    Raises CgroupError when the chosen (or any, for "auto") driver is unusable."""
    if choice == "none":
        return None
    errors: list[str] = []
    if choice in ("auto", "v2"):
        if (base / "cgroup.controllers").exists():
            try:
                return CgroupV2(agent_id, base)
            except (CgroupError, OSError) as exc:
                errors.append(str(exc))
        else:
            errors.append(f"no cgroup v2 hierarchy at {base}")
    if choice in ("auto", "v1"):
        try:
            mounts = find_v1_mounts(Path("/proc/self/mounts").read_text())
            return CgroupV1(agent_id, mounts)
        except (CgroupError, OSError) as exc:
            errors.append(str(exc))
    raise CgroupError("no usable cgroup hierarchy: " + "; ".join(errors))


def check_writable(driver: CgroupDriver) -> None:
    """Raise CgroupError unless the agent may create cgroups under every root."""
    for root in driver.roots():
        if not os.access(root, os.W_OK):
            raise CgroupError(f"cgroup hierarchy {root} is not writable (run the agent as root)")
