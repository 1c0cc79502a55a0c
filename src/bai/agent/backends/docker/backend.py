"""The Docker backend: one container per session, through the Engine API (aiodocker).
See docs/docker-backend.md.

``start`` checks the engine, finds the kernel images ``bai image build`` made (their
``bai.environment`` labels name the environments offered), exports each environment's
syscall policy as a Docker seccomp profile, opens the scratch disks (as the local
backend's, bai.agent.scratch), keeps the running containers a previous agent on this
data dir left with a session record and removes the rest (labels ``bai.agent``,
``bai.data-dir``); ``recover`` re-attaches the kept ones (decision 0010). ``create``
makes the session's scratch dir and socket dir and starts a ``DockerSandbox``
(docker_sandbox.py).

Directories: ``<data_dir>/docker/scratch/<name>`` each session's /home/work;
``<data_dir>/docker/sessions/<name>.json`` each session's record; the runner sockets
under ``/run/bai-docker/<hash of data_dir>`` (short paths: a unix socket's path is at
most 107 bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import aiodocker
from aiodocker.containers import DockerContainer

from bai.agent import cgroups
from bai.agent.backends.base import Backend, BackendUnavailable, Sandbox
from bai.agent.backends.docker.container import LABEL_AGENT, LABEL_DATA_DIR, ContainerSpec, passwd_files
from bai.agent.backends.docker.kernel_images import ENGINES, LABEL_ENVIRONMENT, KernelImage, environments_of, image_from
from bai.agent.backends.docker.record import SandboxRecord, scratch_from
from bai.agent.backends.docker.sandbox import DockerHost, DockerSandbox
from bai.agent.backends.host import find_gpus, host_slots, precompile_runner
from bai.agent.backends.local.backend import UidPool
from bai.agent.cgroups import CgroupDriver, CgroupError, Limits, SessionCgroup
from bai.agent.config import AgentConfig
from bai.agent.environments import Catalog, CatalogError, UnknownEnvironment, load_catalog
from bai.agent.environments.launch import Launch
from bai.agent.gpu import (
    GpuAllocator,
    GpuDevice,
    GpuError,
    GpuInventory,
    driver_files,
    gpu_count,
    visible_devices,
)
from bai.agent.scratch import Scratch, ScratchDisks, ScratchError, open_disks, reconcile, remove_scratch
from bai.agent.seccomp import PolicyError, policy_for
from bai.agent.seccomp.docker import docker_profile
from bai.common.agent_rpc import SandboxSpec
from bai.common.errors import SessionCreationFailed
from bai.runner import protocol

log = logging.getLogger(__name__)

SOCKET_BASE = Path("/run/bai-docker")
STALE_CGROUP_S = 60.0


class DockerBackend(Backend):
    name: ClassVar[str] = "docker"
    reattachable: ClassVar[bool] = True

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        self.root = config.data_dir / "docker"
        self.data_digest = hashlib.sha256(str(config.data_dir.resolve()).encode()).hexdigest()[:16]
        self.socket_root = SOCKET_BASE / self.data_digest
        self.docker: aiodocker.Docker | None = None
        self.images: dict[str, KernelImage] = {}
        self.catalog: Catalog | None = None
        self.gpus = GpuInventory((), Path("/dev"))  # found at start (bai.agent.gpu)
        self.gpu_allocator = GpuAllocator(())
        self.launches: dict[str, Launch] = {}  # an image's environment label → its catalog entry
        self.profiles: dict[str, str] = {}  # environment → Docker seccomp profile JSON
        self.sandboxes: dict[str, DockerSandbox] = {}
        self.host: DockerHost | None = None
        self.runner_dir = config.runner_dir or Path(protocol.__file__).resolve().parent
        self._lock: int | None = None
        self.records_dir = self.root / "sessions"
        #: running containers of a previous agent on this data dir, with their records:
        #: ``recover`` takes them back
        self._orphans: list[tuple[SandboxRecord, Scratch, DockerContainer]] = []
        self.session_cgroups = False  # whether each container goes under a session cgroup of ours
        #: a host uid per container (the local backend's range); None where the agent is not root
        self.uids = UidPool(config.sandbox_uid_base, config.sandbox_uid_count) if os.geteuid() == 0 else None
        self.gpu_toolkit = False  # real GPUs through device requests (else binds): _gpu_wiring
        self.driver_files: dict[str, str] = {}  # bound into containers with real GPUs

    async def start(self) -> None:
        try:
            docker = aiodocker.Docker(url=self.config.docker_url)
        except ValueError as exc:  # no address given and no default socket
            raise BackendUnavailable(f"no Docker engine: {exc}") from exc
        try:
            await docker.version()
            self.images = await self._kernel_images(docker)
            info = await docker.system.info()
        except (aiodocker.DockerError, OSError) as exc:
            await docker.close()
            raise BackendUnavailable(f"the Docker engine is unreachable: {exc}") from exc
        if not self.images:
            await docker.close()
            raise BackendUnavailable("no kernel images (labelled bai.environment): run `bai image build python`")
        self.docker = docker
        try:
            self.profiles = self._seccomp_profiles()
            self._prepare_dirs()
            survivors = await self._survivors()
            disks = await self._scratch_disks([scratch for _, scratch, _ in survivors])
        except (OSError, ScratchError, PolicyError, BackendUnavailable) as exc:
            await self._close()
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendUnavailable(f"cannot prepare the Docker backend: {exc}") from exc
        await precompile_runner(self.config.runner_python, self.runner_dir)
        driver = _cgroup_driver(self.config.agent_id)
        # session cgroups above the containers' need Docker's cgroupfs driver (systemd's
        # takes slices only) and the same hierarchy as ours
        self.session_cgroups = (
            driver is not None
            and info.get("CgroupDriver") == "cgroupfs"
            and _docker_cgroup_version(info) == driver.version
        )
        if not self.session_cgroups:
            log.warning(
                "Docker's cgroup driver is %s: figures come from each container's own cgroup, "
                "and a run whose container dies reports none",
                info.get("CgroupDriver"),
            )
        self.host = DockerHost(
            config=self.config,
            docker=docker,
            cgroups=driver,
            scratch=disks,
            released=self._released,
            renamed=self._renamed,
            records=self.records_dir,
        )
        self.gpus = find_gpus(self.config, self.config.data_dir / "fake-gpus")
        self.gpu_allocator = GpuAllocator(self.gpus.devices)
        await self._gpu_wiring(info)
        self._orphans = await self._claim_ids(survivors)
        await self.reconcile(keep={record.container_id for record, _, _ in self._orphans})

    async def _gpu_wiring(self, info: Mapping[str, Any]) -> None:
        """How containers get real GPUs: a device request where the NVIDIA container toolkit
        is there, else their nodes and the host driver's files (a fake inventory: its files)."""
        if not self.gpus.devices or self.config.fake_gpus:
            return
        mode = self.config.docker_gpus
        if mode == "auto":
            mode = "toolkit" if _has_toolkit(info) else "binds"
        self.gpu_toolkit = mode == "toolkit"
        if not self.gpu_toolkit:
            found = await asyncio.to_thread(driver_files)
            self.driver_files = {name: str(path) for name, path in found.items()}
            if "lib/libcuda.so.1" not in found:
                log.warning("GPUs without the NVIDIA container toolkit, and no libcuda.so.1 found to bind")
        log.info("GPUs reach containers through %s", "the NVIDIA container toolkit" if self.gpu_toolkit else "binds")

    async def _kernel_images(self, docker: aiodocker.Docker) -> dict[str, KernelImage]:
        found = []
        for entry in await docker.images.list(filters={"label": [LABEL_ENVIRONMENT]}):
            labels = entry.get("Labels") or {}
            for ref in entry.get("RepoTags") or []:
                if ref != "<none>:<none>":
                    image = image_from(ref, labels)
                    if image is not None:
                        found.append(image)
        return environments_of([self._with_launch(image) for image in found], ENGINES)

    def _with_launch(self, image: KernelImage) -> KernelImage:
        """The image with the engine and settings of its catalog entry (the runner is told
        how to run a REPL or compile a file); as labelled when the catalog has no such entry."""
        try:
            if self.catalog is None:
                self.catalog = load_catalog(self.config.environment_catalog)
            launch = Launch(self.catalog.resolve(image.environment))
        except (CatalogError, UnknownEnvironment) as exc:
            log.warning("image %s: %s", image.ref, exc)
            return image
        self.launches[image.environment] = launch
        config = json.dumps(launch.runner_config(), separators=(",", ":")) if launch.engine != "python" else ""
        return dataclasses.replace(image, engine=launch.engine, config=config)

    def _seccomp_profiles(self) -> dict[str, str]:
        if not self.config.seccomp:
            log.warning("the syscall filter is off (BAI_AGENT_SECCOMP=false): Docker's default profile applies")
            return {}
        config = self.config
        return {
            name: docker_profile(
                policy_for(name, config.seccomp_overlay, config.seccomp_environment_dir)
            ).model_dump_json()
            for name in self.images
        }

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BackendUnavailable(f"another agent is using {self.root}") from None
        self._lock = fd
        self.records_dir.mkdir(mode=0o700, exist_ok=True)
        SOCKET_BASE.mkdir(parents=True, exist_ok=True)
        SOCKET_BASE.chmod(0o711)
        # kept: a running container's runner may wait in its dir (reconcile removes the rest)
        self.socket_root.mkdir(mode=0o711, exist_ok=True)
        self.socket_root.chmod(0o711)  # traversable, not listable: each sandbox's dir name is a secret

    async def _scratch_disks(self, keep: list[Scratch]) -> ScratchDisks:
        config = self.config
        scratch_root, image_dir = self.root / "scratch", self.root / "scratch-images"
        scratch_root.mkdir(exist_ok=True)
        for item in await asyncio.to_thread(reconcile, scratch_root, image_dir, keep):
            log.warning("released the leftover scratch %s", item)
        kept = {scratch.path for scratch in keep}
        for entry in scratch_root.iterdir():  # empty mount points now, or a hostdir's files
            if entry not in kept:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(remove_scratch, entry)
        return await asyncio.to_thread(open_disks, config.scratch_type, scratch_root, image_dir, config.scratch_size)

    async def _claim_ids(
        self, survivors: list[tuple[SandboxRecord, Scratch, DockerContainer]]
    ) -> list[tuple[SandboxRecord, Scratch, DockerContainer]]:
        """Of the survivors, those whose GPUs and uid are theirs again; the others' scratch
        disks are released (``reconcile`` removes their containers)."""
        kept = []
        for record, scratch, container in survivors:
            problem = self._reserve(record)
            if problem is None:
                kept.append((record, scratch, container))
                continue
            log.warning("session %s cannot be re-attached: %s", record.spec.session_id, problem)
            assert self.host is not None
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.host.scratch.remove, scratch)
        return kept

    def _reserve(self, record: SandboxRecord) -> str | None:
        """Give a survivor its GPUs and host uid again; why it cannot have them, or None."""
        try:
            self.gpu_allocator.reserve(record.spec.session_id, record.gpus)
        except GpuError as exc:
            return str(exc)
        if record.uid is not None and (self.uids is None or not self.uids.reserve(record.uid)):
            self.gpu_allocator.release(record.spec.session_id)
            return f"its uid {record.uid} is not free"
        return None

    def _containers_filter(self) -> dict[str, list[str]]:
        return {"label": [f"{LABEL_AGENT}={self.config.agent_id}", f"{LABEL_DATA_DIR}={self.data_digest}"]}

    async def _survivors(self) -> list[tuple[SandboxRecord, Scratch, DockerContainer]]:
        """The sessions of a previous agent on this data dir whose containers still run,
        from the records it left; the other records are dropped."""
        assert self.docker is not None
        running = {
            container.id: container
            for container in await self.docker.containers.list(filters=self._containers_filter())
        }
        found = []
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = SandboxRecord.from_json(path.read_text())
                scratch = scratch_from(record.scratch)
            except (OSError, ValueError) as exc:
                log.warning("dropped the sandbox record %s: %s", path.name, exc)
                path.unlink(missing_ok=True)
                continue
            container = running.get(record.container_id)
            if container is None or record.environment not in self.images or path.stem != record.spec.session_id:
                problem = "its container is gone" if container is None else f"no image for {record.environment}"
                log.warning("session %s cannot be re-attached: %s", record.spec.session_id, problem)
                path.unlink(missing_ok=True)
                continue
            found.append((record, scratch, container))
        return found

    async def reconcile(self, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Remove the containers this agent id left on this data dir (a crashed or restarted
        agent), but for those in ``keep`` (ids: running sessions ``recover`` takes back),
        with the socket dirs and records of the removed ones. Those of an agent with the
        same id on another data dir may be a live neighbour's and are left alone. Returns
        the names removed."""
        assert self.docker is not None
        removed = []
        for container in await self.docker.containers.list(all=True, filters=self._containers_filter()):
            if container.id in keep:
                continue
            name = (container._container.get("Names") or [container.id])[0].lstrip("/")
            try:
                await container.delete(force=True, v=True)
            except aiodocker.DockerError as exc:
                log.warning("cannot remove the leftover container %s: %s", name, exc)
                continue
            log.warning("removed the leftover container %s", name)
            removed.append(name)
        kept_dirs = {Path(record.socket_dir) for record, _, _ in self._orphans}
        for entry in self.socket_root.iterdir():
            if entry not in kept_dirs:
                shutil.rmtree(entry, ignore_errors=True)
        kept_records = {f"{record.spec.session_id}.json" for record, _, _ in self._orphans}
        for entry in self.records_dir.iterdir():
            if entry.name not in kept_records:
                entry.unlink(missing_ok=True)
        self._remove_stale_cgroups()
        return removed

    async def recover(self) -> list[tuple[SandboxSpec, Sandbox]]:
        """Re-attach the sessions a previous agent on this data dir left running (its
        crash, or a stop with ``keep_sessions``): each container's runner connects again
        to a new listener in its socket dir. One that does not is destroyed."""
        orphans, self._orphans = self._orphans, []
        results = await asyncio.gather(*(self._reattach(*orphan) for orphan in orphans))
        return [(sandbox.spec, sandbox) for sandbox in results if sandbox is not None]

    async def _reattach(
        self, record: SandboxRecord, scratch: Scratch, container: DockerContainer
    ) -> DockerSandbox | None:
        assert self.host is not None
        image = self.images[record.environment]
        spec, limits = record.spec, record.limits
        driver = self.host.cgroups
        # the session cgroup, like the scratch dir, has the name the container was created under
        parent = driver.attach(record.created_as, limits) if record.parent_cgroup and driver is not None else None
        devices = [device for device in self.gpus.devices if device.index in record.gpus]
        # a claimed pooled container still has the pool's environment: the session's came by the runner
        environ = spec.environ if record.created_as == spec.session_id else {}
        container_spec = self._container_spec(
            record.created_as, image, limits, scratch, Path(record.socket_dir), environ, parent, devices, record.uid
        )
        sandbox = DockerSandbox(
            self.host, spec, container_spec, scratch, parent, self.launches.get(image.environment), record.gpus
        )
        self.sandboxes[spec.session_id] = sandbox
        try:
            await sandbox.reattach(container, record.runner_pid)
        except (SessionCreationFailed, OSError) as exc:
            log.warning("session %s: cannot re-attach its container: %s", spec.session_id, exc)
            await sandbox.destroy(grace_s=0)
            return None
        log.info("session %s: re-attached its container %s", spec.session_id, container.id[:12])
        return sandbox

    def _remove_stale_cgroups(self) -> None:
        """Empty session cgroups of this agent id, once STALE_CGROUP_S old (an agent with
        the same id on another data dir may be making one right now)."""
        driver = self.host.cgroups if self.host is not None else None
        if driver is None or not self.session_cgroups:
            return
        for name in driver.leftovers():
            with contextlib.suppress(CgroupError, OSError):
                if driver.remove_if_stale(name, STALE_CGROUP_S):
                    log.info("removed the stale empty cgroup %s", name)

    async def stop(self) -> None:
        await self._close()

    def detach(self, sandbox: Sandbox) -> None:
        assert isinstance(sandbox, DockerSandbox)
        sandbox.detach()
        self.sandboxes.pop(sandbox.session_id, None)

    async def _close(self) -> None:
        if self.host is not None and self.host.cgroups is not None and self.session_cgroups:
            with contextlib.suppress(CgroupError, OSError):
                self.host.cgroups.remove_agent_dirs()
        if self.docker is not None:
            await self.docker.close()
            self.docker = None
        self.host = None
        if not self.sandboxes and not any(self.records_dir.glob("*.json")):  # none left for the next agent
            shutil.rmtree(self.socket_root, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def capacity(self) -> dict[str, Decimal]:
        return host_slots(self.gpus)

    def environments(self) -> list[str]:
        return sorted(name for name in self.images if ":" not in name)

    def unavailable_environments(self) -> dict[str, str]:
        """The catalog's entries with no kernel image here (once the catalog was read)."""
        if self.catalog is None:
            return {}
        out: dict[str, str] = {}
        for entry in self.catalog:
            if entry.key in self.images:
                continue
            reason = f"no kernel image: run `bai image build {entry.key}`"
            out[entry.key] = reason
            if self.catalog.default_tag(entry.name) == entry.tag and entry.name not in self.images:
                out[entry.name] = reason
        return out

    def pooled_environments(self) -> list[str]:
        """Python only, as on the local backend: its runner forks the REPL once the session's
        variables have come (another engine's REPL, Lua's or R's, starts with the container,
        so a pooled one would miss them), and a ready container of a framework's image
        (python-pytorch: a GiB image, its own interpreter) would hold memory few sessions use.
        The others start cold."""
        return [name for name in ("python",) if name in self.images and self.images[name].engine == "python"]

    def image_for(self, environment: str) -> KernelImage | None:
        return self.images.get(environment)

    def scratch_type(self) -> str | None:
        return self.host.scratch.kind if self.host is not None else None

    def poolable(self, spec: SandboxSpec) -> bool:
        if self.host is None or spec.resources.get("cuda.device", "0") not in ("0", ""):
            return False
        disks = self.host.scratch
        return disks.cap_for(spec.scratch_bytes) == disks.cap_for(None)

    async def create(self, spec: SandboxSpec, limits: Limits) -> Sandbox:
        host = self.host
        if host is None:
            raise SessionCreationFailed("the Docker backend is not started")
        image = self.images.get(spec.environment)
        if image is None:
            raise SessionCreationFailed(f"no image for the environment {spec.environment!r}")
        try:
            devices = self.gpu_allocator.allocate(spec.session_id, gpu_count(spec.resources))
        except GpuError as exc:
            raise SessionCreationFailed(f"cannot give the session its GPUs: {exc}") from exc
        uid = self.uids.acquire() if self.uids is not None else None
        owner = uid if uid is not None else image.uid
        try:
            if uid is not None:
                await asyncio.to_thread(self._etc_for, image, uid)
            scratch = await asyncio.to_thread(host.scratch.create, spec.session_id, spec.scratch_bytes, owner, owner)
        except (OSError, ScratchError) as exc:
            self._release_ids(spec.session_id, uid)
            raise SessionCreationFailed(f"cannot create the scratch dir: {exc}") from exc
        try:
            parent = self._session_cgroup(spec, limits)
        except SessionCreationFailed:
            self._release_ids(spec.session_id, uid)
            await asyncio.to_thread(host.scratch.remove, scratch)
            raise
        container = self._container_spec(
            spec.session_id, image, limits, scratch, self.socket_root / secrets.token_hex(8), spec.environ,
            parent, devices, uid,
        )  # fmt: skip
        sandbox = DockerSandbox(
            host, spec, container, scratch, parent, self.launches.get(image.environment),
            tuple(device.index for device in devices),
        )  # fmt: skip
        self.sandboxes[spec.session_id] = sandbox
        try:
            await sandbox.start()
        except BaseException as exc:
            await sandbox.destroy(grace_s=0)
            if isinstance(exc, OSError):
                raise SessionCreationFailed(f"cannot start the container: {exc}") from exc
            raise
        return sandbox

    def _session_cgroup(self, spec: SandboxSpec, limits: Limits) -> SessionCgroup | None:
        driver = self.host.cgroups if self.host is not None else None
        if driver is None or not self.session_cgroups:
            return None
        try:
            return driver.create(spec.session_id, limits)
        except CgroupError as exc:
            raise SessionCreationFailed(f"cannot make the session's cgroup: {exc}") from exc

    def _container_spec(
        self, name: str, image: KernelImage, limits: Limits, scratch: Scratch, socket_dir: Path,
        environ: Mapping[str, str], parent: SessionCgroup | None, devices: list[GpuDevice], uid: int | None,
    ) -> ContainerSpec:  # fmt: skip
        """A container's inputs: created as ``name`` (a session's id, or a pool's name)."""
        if devices:
            environ = {**environ, "CUDA_VISIBLE_DEVICES": visible_devices(devices)}
        return ContainerSpec(
            agent_id=self.config.agent_id,
            session_id=name,
            image=image,
            limits=limits,
            runner_dir=self.runner_dir,
            scratch=scratch.path,
            socket_dir=socket_dir,
            environ=environ,
            tmp_size=self.config.tmp_size,
            seccomp_profile=self.profiles.get(image.environment),
            init=self.config.docker_init,
            preload=self.config.preload_modules if image.engine == "python" else (),
            extra_labels={LABEL_DATA_DIR: self.data_digest},
            cgroup_parent=f"/{parent.name}" if parent is not None else "",
            devices=() if self.gpu_toolkit else tuple(str(node) for node in self.gpus.nodes_for(devices)),
            gpu_requests=tuple(device.uuid for device in devices) if self.gpu_toolkit else (),
            driver_files=self.driver_files if devices else {},
            reconnect_s=self.config.docker_reattach_s,
            uid=uid,
            etc_dir=self.root / "etc" / str(uid) if uid is not None else None,
        )

    def _etc_for(self, image: KernelImage, uid: int) -> Path:
        """The dir holding the /etc/passwd and /etc/group of a container running as ``uid``
        (written at each create: one live session per uid; root's, read-only inside)."""
        directory = self.root / "etc" / str(uid)
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name, text in passwd_files(image.user, uid, image.workdir).items():
            tmp = directory / f".{name}.tmp"
            tmp.write_text(text)
            tmp.chmod(0o644)
            os.replace(tmp, directory / name)
        return directory

    def _release_ids(self, session_id: str, uid: int | None) -> None:
        self.gpu_allocator.release(session_id)
        if uid is not None and self.uids is not None:
            self.uids.release(uid)

    def _released(self, sandbox: DockerSandbox) -> None:
        self._release_ids(sandbox.container_spec.session_id, sandbox.container_spec.uid)  # as created
        if self.sandboxes.get(sandbox.session_id) is sandbox:
            del self.sandboxes[sandbox.session_id]

    def _renamed(self, sandbox: DockerSandbox, old_id: str) -> None:
        self.sandboxes.pop(old_id, None)
        self.sandboxes[sandbox.session_id] = sandbox


def _has_toolkit(info: Mapping[str, Any]) -> bool:
    """Whether the engine can serve NVIDIA device requests: an nvidia runtime registered, or
    the toolkit's CLI on this host (Docker's built-in GPU support calls it)."""
    runtimes = info.get("Runtimes") or {}
    return "nvidia" in runtimes or shutil.which("nvidia-container-cli") is not None


def _docker_cgroup_version(info: Mapping[str, Any]) -> str:
    """The engine's hierarchy, "v1" or "v2", from ``GET /info`` ("1" / "2")."""
    return f"v{info.get('CgroupVersion', '1')}"


def _cgroup_driver(agent_id: str) -> CgroupDriver | None:
    """A driver to read the containers' cgroups (Docker makes them), or None: no figures."""
    try:
        return cgroups.detect_driver(agent_id)
    except CgroupError as exc:
        log.warning("no session accounting: %s", exc)
        return None
