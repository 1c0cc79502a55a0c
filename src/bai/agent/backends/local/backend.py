"""The local backend: one bubblewrap sandbox per session (ARCHITECTURE.md, "The local sandbox").

The backend prepares the host once (``start``): cgroup driver, bwrap's static
arguments, the sandbox share root, a lock on the data dir, and the cleanup of
what a crashed predecessor left. Per session (``create``) it hands out a host
uid, makes the scratch dir, and starts a ``LocalSandbox`` (local_sandbox.py).

The share root holds ``scratch/<session_id>`` (each session's /home/work) and,
where the runner's package is not readable by other uids, a copy of it. bwrap
runs as the session's unprivileged uid and resolves its bind sources itself,
so every directory above the share root must be traversable by other uids
(mode o+x). It is ``<data_dir>/sandbox`` when that holds, else
``/var/lib/bai/sandboxes/<hash of data_dir>`` (e.g. a data dir under /root).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

from bai.agent import cgroups
from bai.agent.backends.base import Backend, BackendUnavailable, Sandbox
from bai.agent.backends.host import find_gpus, host_slots, precompile_runner
from bai.agent.backends.local import bwrap
from bai.agent.backends.local.etc_view import REFRESH_S as ETC_REFRESH_S
from bai.agent.backends.local.etc_view import EtcView
from bai.agent.backends.local.sandbox import LocalHost, LocalSandbox, kill_cgroup
from bai.agent.backends.local.spawner import Spawner
from bai.agent.cgroups import CgroupError, Limits
from bai.agent.config import AgentConfig
from bai.agent.environments import Catalog, CatalogError, Status, UnknownEnvironment, host_status, load_catalog
from bai.agent.environments.launch import Launch
from bai.agent.gpu import GpuAllocator, GpuDevice, GpuError, GpuInventory, gpu_count
from bai.agent.mounts import unmount_under
from bai.agent.scratch import (
    Scratch,
    ScratchDisks,
    ScratchError,
    open_disks,
    reachable_by_others,
    reconcile,
    remove_scratch,
)
from bai.agent.seccomp import Policy, PolicyError, policy_for
from bai.agent.seccomp.bpf import compile_bpf
from bai.common.agent_rpc import SandboxSpec
from bai.common.errors import SessionCreationFailed
from bai.runner import protocol

log = logging.getLogger(__name__)

FALLBACK_SHARE_BASE = Path("/var/lib/bai/sandboxes")
SCRATCH_IMAGES = "scratch-images"  # under the data dir: hostfile images, never bound into a sandbox
STALE_CGROUP_S = 60.0


class UidPool:
    """Host uids for sandboxes: ``base + slot``. Slots are handed out round-robin so a
    uid is reused as late as possible. I/O-free."""

    def __init__(self, base: int, count: int) -> None:
        self.base = base
        self.count = count
        self._used: set[int] = set()
        self._next = 0

    def acquire(self) -> int:
        for _ in range(self.count):
            slot = self._next
            self._next = (self._next + 1) % self.count
            if slot not in self._used:
                self._used.add(slot)
                return self.base + slot
        raise SessionCreationFailed("no free sandbox uid left on this agent")

    def reserve(self, uid: int) -> bool:
        """Take ``uid`` (a re-attached sandbox's); False when it is outside the range or taken."""
        slot = uid - self.base
        if not 0 <= slot < self.count or slot in self._used:
            return False
        self._used.add(slot)
        return True

    def release(self, uid: int) -> None:
        self._used.discard(uid - self.base)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created), or None if it is taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _sweep_orphan_shares(keep: Path) -> None:
    """Remove fallback share roots whose lock no agent holds: their agents are gone,
    and with them (bwrap --die-with-parent) their sandboxes. A root without a lock
    file (being created right now, or made by something else) is left alone."""
    for share in FALLBACK_SHARE_BASE.iterdir():
        lock_path = share / "agent.lock"
        if share == keep or not share.is_dir() or not lock_path.exists():
            continue
        fd = _try_lock(lock_path)
        if fd is None:
            continue  # a live agent's
        try:
            log.info("removing the orphaned share root %s", share)
            unmount_under(share)  # its scratch disks; their images are in their agent's data dir
            shutil.rmtree(share, ignore_errors=True)
        finally:
            os.close(fd)


async def _make_scratch(disks: ScratchDisks, spec: SandboxSpec, owner: int) -> Scratch:
    """The session's scratch disk, made in a worker thread (mkfs, mount). If the caller
    is cancelled meanwhile, the disk is removed once made rather than left mounted."""
    job = asyncio.ensure_future(asyncio.to_thread(disks.create, spec.session_id, spec.scratch_bytes, owner, owner))

    def discard(done: asyncio.Future[Scratch]) -> None:
        if not done.cancelled() and done.exception() is None:
            try:
                disks.remove(done.result())
            except OSError as exc:
                log.warning("cannot remove the scratch disk of the cancelled session %s: %s", spec.session_id, exc)

    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(discard)
        raise


class LocalBackend(Backend):
    name: ClassVar[str] = "local"

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        self.switch_uid = os.geteuid() == 0
        self.uids = UidPool(config.sandbox_uid_base, config.sandbox_uid_count)
        self.sandboxes: dict[str, LocalSandbox] = {}  # by session id (a pooled one's: its pool name)
        self.share_root = config.data_dir / "sandbox"
        self._fallback_share = False
        self._locks: list[int] = []
        self.host: LocalHost | None = None
        self.scratch_kind: str | None = None  # the scratch disks' kind, once started
        self.catalog: Catalog | None = None
        self.launches: dict[str, Launch] = {}  # the available environments, "name" and "name:tag"
        self.unavailable: dict[str, str] = {}  # the others, keyed alike: why not, and the remedy
        self.etc = EtcView(self.share_root / "etc", bwrap.ETC_ENTRIES, bwrap.etc_files())
        self._etc_task: asyncio.Task[None] | None = None

    @property
    def scratch_root(self) -> Path:
        return self.share_root / "scratch"

    async def start(self) -> None:
        config = self.config
        if not os.access(config.bwrap_path, os.X_OK):
            raise BackendUnavailable(f"bubblewrap not found at {config.bwrap_path}")
        try:
            driver = cgroups.detect_driver(config.agent_id, config.cgroup_driver)
            if driver is not None:
                cgroups.check_writable(driver)
        except CgroupError as exc:
            raise BackendUnavailable(f"cgroups unusable: {exc}") from exc
        await self._find_environments()
        seccomp = self._compile_seccomp()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            self._prepare_share_root()
            runner_dir = self._runner_dir()
        except OSError as exc:
            self._unlock_data_dir()
            raise BackendUnavailable(f"cannot prepare {self.share_root}: {exc}") from exc
        await precompile_runner(self.config.runner_python, runner_dir)
        try:
            disks = await self._scratch_disks()
        except (OSError, ScratchError) as exc:
            self._unlock_data_dir()
            raise BackendUnavailable(f"scratch disks: {exc}") from exc
        self.scratch_kind = disks.kind
        inventory = find_gpus(config, self.share_root / "fake-gpus")  # sandboxes reach it
        etc_view = await self._etc_view()
        self.host = LocalHost(
            config=config,
            cgroups=driver,
            layout=bwrap.host_layout(etc_view=etc_view),
            etc_data=etc_view is None,
            seccomp=seccomp,
            runner_dir=runner_dir,
            spawner=Spawner(),
            launches=self.launches,
            scratch=disks,
            gpus=inventory,
            gpu_allocator=GpuAllocator(inventory.devices),
            released=self._released,
            renamed=self._renamed,
        )
        await self._clean_leftovers()

    async def _etc_view(self) -> Path | None:
        """The first copy of the host's /etc entries for sandboxes (None: the entries are
        bound one by one, as when the copy cannot be made), followed by ``_follow_etc``."""
        self.etc = EtcView(self.share_root / "etc", bwrap.ETC_ENTRIES, bwrap.etc_files())
        try:
            await asyncio.to_thread(self.etc.remove_all)  # a crashed predecessor's
            view = await asyncio.to_thread(self.etc.refresh)
        except OSError as exc:
            log.warning("no copy of /etc for sandboxes, each entry is bound on its own: %s", exc)
            return None
        self._etc_task = asyncio.create_task(self._follow_etc())
        return view

    async def _follow_etc(self) -> None:
        """A new copy of the host's /etc entries when they change, for the sandboxes started next."""
        while True:
            await asyncio.sleep(ETC_REFRESH_S)
            try:
                view = await asyncio.to_thread(self.etc.refresh)
            except OSError as exc:
                log.warning("cannot refresh the sandboxes' copy of /etc: %s", exc)
                continue
            if view is not None and self.host is not None:
                log.info("the host's /etc changed: new sandboxes see %s", view)
                self.host.layout = bwrap.host_layout(etc_view=view)

    async def _scratch_disks(self) -> ScratchDisks:
        """Release the scratch mounts and images a crashed predecessor left, then open
        the configured kind of scratch disks (trying it once)."""
        config = self.config
        image_dir = config.data_dir / SCRATCH_IMAGES
        for item in await asyncio.to_thread(reconcile, self.scratch_root, image_dir):
            log.warning("released the leftover scratch %s", item)
        return await asyncio.to_thread(
            open_disks, config.scratch_type, self.scratch_root, image_dir, config.scratch_size
        )

    async def _find_environments(self) -> None:
        """The catalog's entries this host can run (``bai env list``): each under
        ``name:tag``, and under ``name`` alone for its default tag."""
        try:
            catalog = self.catalog = load_catalog(self.config.environment_catalog)
        except CatalogError as exc:
            raise BackendUnavailable(f"environment catalog: {exc}") from exc
        statuses = await asyncio.to_thread(host_status, catalog, self.config.environments_base)
        for status in statuses:
            env = status.env
            names = [env.key] + ([env.name] if catalog.default_tag(env.name) == env.tag else [])
            reason = status.reason if not status.available else self._unreachable(status)
            for name in names:
                if reason:
                    self.unavailable[name] = reason
                else:
                    self.launches[name] = Launch(env, status.venv_dir)

    def _unreachable(self, status: Status) -> str:
        """Why a built venv cannot be bound into sandboxes ("" when it can)."""
        if status.venv_dir is None or not self.switch_uid:
            return ""
        blocked = reachable_by_others(status.venv_dir)
        return f"{blocked} is not traversable by other users (chmod o+x {blocked})" if blocked else ""

    def _compile_seccomp(self) -> dict[str, bytes]:
        """Each environment's BPF program (bai.agent.seccomp.policy_for), compiled once per
        distinct policy."""
        if not self.config.seccomp:
            log.warning("the syscall filter is off (BAI_AGENT_SECCOMP=false)")
            return {}
        programs: dict[Policy, bytes] = {}
        out: dict[str, bytes] = {}
        try:
            for name in sorted({launch.env.name for launch in self.launches.values()}):
                policy = policy_for(name, self.config.seccomp_overlay, self.config.seccomp_environment_dir)
                if policy not in programs:
                    programs[policy] = compile_bpf(policy)
                out[name] = programs[policy]
        except PolicyError as exc:
            raise BackendUnavailable(f"seccomp policy: {exc}") from exc
        return out

    def _lock_data_dir(self) -> None:
        """One agent per data dir: its leftovers cleanup must not hit a live neighbour."""
        fd = _try_lock(self.config.data_dir / "agent.lock")
        if fd is None:
            raise BackendUnavailable(f"another agent is using {self.config.data_dir}")
        self._locks.append(fd)

    def _unlock_data_dir(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self._locks = []

    def _prepare_share_root(self) -> None:
        data_dir = self.config.data_dir
        if self.switch_uid and reachable_by_others(data_dir) is not None:
            digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
            FALLBACK_SHARE_BASE.mkdir(parents=True, exist_ok=True)
            FALLBACK_SHARE_BASE.chmod(0o711)
            self.share_root = FALLBACK_SHARE_BASE / digest
            self._fallback_share = True
        self.share_root.mkdir(exist_ok=True)
        self.share_root.chmod(0o711)
        if self._fallback_share:
            lock = _try_lock(self.share_root / "agent.lock")
            if lock is None:
                raise BackendUnavailable(f"another agent is using {self.share_root}")
            self._locks.append(lock)
            _sweep_orphan_shares(keep=self.share_root)
        self.scratch_root.mkdir(exist_ok=True)
        self.scratch_root.chmod(0o711)
        blocked = reachable_by_others(self.scratch_root) if self.switch_uid else None
        if blocked is not None:
            raise BackendUnavailable(
                f"{blocked} is not traversable by other users, so sandboxes cannot reach "
                f"their scratch dirs under {self.scratch_root} (chmod o+x {blocked})"
            )

    def _runner_dir(self) -> Path:
        """The runner package to bind into sandboxes: the installed one, or a copy
        in the share root where other uids cannot read it (an install under /root)."""
        source = self.config.runner_dir or Path(protocol.__file__).resolve().parent
        if not self.switch_uid or reachable_by_others(source) is None:
            return source
        copy = self.share_root / "runner"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        return copy

    async def _clean_leftovers(self) -> None:
        """Kill and remove the sessions a previous agent on this data dir left (after a
        crash): each has a scratch dir, and maybe a cgroup by the same session id.
        Empty session cgroups of agents with this id and another data dir (a killed
        test agent...) are removed too once they are STALE_CGROUP_S old; those are
        never killed, as they may belong to a live neighbour."""
        assert self.host is not None
        driver = self.host.cgroups
        if driver is not None:
            ours = {entry.name for entry in self.scratch_root.iterdir()}
            for session_id in driver.leftovers():
                if session_id not in ours and driver.remove_if_stale(session_id, STALE_CGROUP_S):
                    log.info("removed the stale empty cgroup of session %s", session_id)
        for entry in self.scratch_root.iterdir():
            log.warning("removing the leftovers of session %s", entry.name)
            if driver is not None:
                cgroup = driver.attach(entry.name, Limits(Decimal(0), 0, 0))
                if any(path.is_dir() for path in cgroup.dirs):
                    await kill_cgroup(driver, cgroup, f"leftover session {entry.name}")
                    with contextlib.suppress(CgroupError):
                        driver.remove(cgroup)
            await asyncio.to_thread(remove_scratch, entry)

    async def stop(self) -> None:
        if self._etc_task is not None:
            self._etc_task.cancel()
            await asyncio.gather(self._etc_task, return_exceptions=True)
            self._etc_task = None
        if self.host is not None:
            self.host.spawner.close()
            if self.host.cgroups is not None:
                self.host.cgroups.remove_agent_dirs()
            self.host = None
            await asyncio.to_thread(self.etc.remove_all)  # no sandbox has it bound any more
        if self._fallback_share:
            await asyncio.to_thread(unmount_under, self.share_root)  # a disk whose removal failed
            await asyncio.to_thread(shutil.rmtree, self.share_root, True)
        self._unlock_data_dir()

    def capacity(self) -> dict[str, Decimal]:
        return host_slots(self.host.gpus if self.host is not None else GpuInventory((), Path("/dev")))

    def environments(self) -> list[str]:
        return sorted(self.launches)

    def environment_problem(self, environment: str) -> str | None:
        if environment in self.launches:
            return None
        if self.catalog is not None:
            try:
                entry = self.catalog.resolve(environment)
            except UnknownEnvironment as exc:
                return str(exc)
            reason = self.unavailable.get(entry.key, "")
            return f"environment {entry.key} is not available on this agent" + (f": {reason}" if reason else "")
        return f"unknown environment {environment!r}"

    def unavailable_environments(self) -> dict[str, str]:
        return dict(self.unavailable)

    def pooled_environments(self) -> list[str]:
        """Python only: its runner forks a REPL in a millisecond, and a pooled sandbox takes
        its session's variables; the others start cold."""
        return [name for name in ("python",) if name in self.launches]

    def scratch_type(self) -> str | None:
        return self.scratch_kind

    def poolable(self, spec: SandboxSpec) -> bool:
        if self.host is None or spec.resources.get("cuda.device", "0") not in ("0", ""):
            return False  # devices are bound when a sandbox starts: a GPU session starts cold
        disks = self.host.scratch
        return disks.cap_for(spec.scratch_bytes) == disks.cap_for(None)

    async def create(self, spec: SandboxSpec, limits: Limits) -> Sandbox:
        if self.host is None:
            raise SessionCreationFailed("the local backend is not started")
        devices = self._allocate_gpus(spec)
        uid = self.uids.acquire() if self.switch_uid else None
        owner = uid if uid is not None else os.geteuid()
        try:
            scratch = await _make_scratch(self.host.scratch, spec, owner)
        except BaseException as exc:
            if uid is not None:
                self.uids.release(uid)
            self.host.gpu_allocator.release(spec.session_id)
            if isinstance(exc, ScratchError):
                raise SessionCreationFailed(f"cannot create the scratch dir: {exc}") from exc
            raise
        sandbox = LocalSandbox(self.host, spec, limits, uid, scratch, devices)
        self.sandboxes[spec.session_id] = sandbox
        try:
            await sandbox.start()
        except (OSError, CgroupError, SessionCreationFailed) as exc:
            await sandbox.destroy(grace_s=0)
            if isinstance(exc, SessionCreationFailed):
                raise
            raise SessionCreationFailed(f"cannot start the sandbox: {exc}") from exc
        return sandbox

    def _allocate_gpus(self, spec: SandboxSpec) -> list[GpuDevice]:
        assert self.host is not None
        try:
            return self.host.gpu_allocator.allocate(spec.session_id, gpu_count(spec.resources))
        except GpuError as exc:
            raise SessionCreationFailed(f"cannot give the session its GPUs: {exc}") from exc

    def _released(self, sandbox: LocalSandbox) -> None:
        if sandbox.uid is not None:
            self.uids.release(sandbox.uid)
        if self.host is not None:
            self.host.gpu_allocator.release(sandbox.name)
        self.sandboxes.pop(sandbox.session_id, None)

    def _renamed(self, sandbox: LocalSandbox, old_id: str) -> None:
        self.sandboxes.pop(old_id, None)
        self.sandboxes[sandbox.session_id] = sandbox
