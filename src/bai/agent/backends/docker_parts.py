"""Pure pieces of the Docker backend (bai.agent.backends.docker): the kernel images an
agent offers, a container's create body, and a container's cgroup from /proc. No I/O
but /proc reads; unit-tested without Docker.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bai.agent.backends.bwrap import BASE_ENV, HOME, HOSTNAME, RUNNER_BOOT, RUNNER_MOUNT
from bai.agent.cgroups import Limits
from bai.agent.scratch import Scratch
from bai.common.agent_rpc import SandboxSpec

LABEL_AGENT = "bai.agent"
LABEL_SESSION = "bai.session"  # the id it was created for (a pooled one's: its pool name)
LABEL_DATA_DIR = "bai.data-dir"  # a digest of the agent's data dir: two agents with one id keep apart
LABEL_ENVIRONMENT = "bai.environment"  # on kernel images (bai.agent.images)
SOCKET_MOUNT = "/run/bai"  # the per-sandbox host dir holding the agent's listening socket
SOCKET_NAME = "runner.sock"
DRIVER_MOUNT = "/usr/local/nvidia"  # the host driver's libraries and tools, where no toolkit injects them
NANO = Decimal(10**9)
#: the runner engines this backend starts: an image's engine and its settings come from the
#: catalog entry its bai.environment label names (bai.agent.environments.launch)
ENGINES = ("python", "repl", "command")
#: Docker's default masked paths (moby's oci defaults) and /sys/fs/cgroup: the container sees an
#: empty dir there, not the cgroup hierarchy (the local sandbox shows no /sys/fs/cgroup at all)
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    "/sys/fs/cgroup",
)  # fmt: skip


@dataclass(frozen=True)
class KernelImage:
    """A local image built by ``bai image build`` (its labels, docs/images.md)."""

    ref: str  # "bai/python:3.11"
    environment: str  # its bai.environment label, "python:3.11"
    engine: str  # the runner's engine, from bai.runtime
    runner_python: str
    uid: int
    gid: int
    workdir: str = HOME
    user: str = "work"  # the user's name in the image (its bai.user label)
    config: str = ""  # the runner's --config (a REPL's settings), JSON; "" for python


def image_from(ref: str, labels: Mapping[str, str]) -> KernelImage | None:
    """The kernel image described by ``labels``, or None when they are not a bai image's."""
    environment = labels.get(LABEL_ENVIRONMENT)
    runtime = labels.get("bai.runtime")
    if not environment or not runtime:
        return None
    user = labels.get("bai.user", "work:1000")
    name, _, number = user.rpartition(":")
    try:
        uid = int(number)
    except ValueError:
        return None
    if uid == 0:
        return None  # a sandbox never runs as root
    return KernelImage(
        ref=ref,
        environment=environment,
        engine=runtime,
        runner_python=labels.get("bai.runner-python", "/usr/bin/python3"),
        uid=uid,
        gid=uid,
        workdir=labels.get("bai.workdir", HOME),
        user=name or "work",
    )


def environments_of(images: Iterable[KernelImage], engines: Iterable[str]) -> dict[str, KernelImage]:
    """Environment name → image: each image under its full name ("python:3.11") and,
    for the highest tag of each name, under the bare name ("python"). Images whose
    runtime the runner has no engine for are left out."""
    known = set(engines)
    by_name: dict[str, KernelImage] = {}
    out: dict[str, KernelImage] = {}
    for image in sorted(images, key=lambda i: _version_key(i.environment)):
        if image.engine not in known:
            continue
        out[image.environment] = image
        by_name[image.environment.partition(":")[0]] = image  # the highest tag wins
    out.update(by_name)
    return out


def _version_key(environment: str) -> tuple[str, tuple[int, ...], str]:
    name, _, tag = environment.partition(":")
    numbers = tuple(int(part) for part in tag.split(".") if part.isdigit())
    return name, numbers, tag


@dataclass(frozen=True)
class ContainerSpec:
    """Inputs of one sandbox's container."""

    agent_id: str
    session_id: str
    image: KernelImage
    limits: Limits
    runner_dir: Path
    scratch: Path
    socket_dir: Path
    environ: Mapping[str, str]
    tmp_size: int
    seccomp_profile: str | None  # Docker's JSON, or None: Docker's default profile
    cgroup_parent: str = ""  # the session cgroup the container's goes under ("": Docker's default)
    init: bool = False  # Docker's init (tini) as PID 1 above the runner; else the runner is PID 1
    preload: tuple[str, ...] = ()
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    #: its GPUs' nodes (and the driver's control nodes), each at /dev/<its name>: a character
    #: device as a Docker device, a fake inventory's file (bai.agent.gpu) as a read-only bind
    devices: tuple[str, ...] = ()
    #: how long the runner waits for a restarted agent when the agent's socket closes
    #: without a Shutdown (0: it exits, and the session with it)
    reconnect_s: float = 0.0
    #: the host uid (= gid) the container runs as, one per session, with the dir holding the
    #: /etc/passwd and /etc/group that name it as the image's user; None: the image's uid
    uid: int | None = None
    etc_dir: Path | None = None
    #: its GPUs by UUID, asked of the NVIDIA container toolkit (a device request: the toolkit
    #: adds their nodes and the driver's libraries); empty where ``devices`` carries the nodes
    gpu_requests: tuple[str, ...] = ()
    #: without the toolkit: the host driver's libraries and tools, ``lib/<soname>`` or
    #: ``bin/<tool>`` → the host file, bound read-only under DRIVER_MOUNT
    driver_files: Mapping[str, str] = field(default_factory=dict)

    def command(self) -> list[str]:
        argv = [self.image.runner_python, "-I", "-c", RUNNER_BOOT]
        argv += ["--connect", f"{SOCKET_MOUNT}/{SOCKET_NAME}", "--engine", self.image.engine]
        if self.reconnect_s > 0:
            argv += ["--reconnect", f"{self.reconnect_s:g}"]
        if self.image.config:
            argv += ["--config", self.image.config]
        if self.preload:
            argv += ["--preload", ",".join(self.preload)]
        return argv

    def body(self) -> dict[str, Any]:
        """The Engine API's ``POST /containers/create`` body."""
        env = {**BASE_ENV, "HOME": self.image.workdir, "USER": self.image.user, "LOGNAME": self.image.user,
               **self.driver_environ(), **self.environ}  # fmt: skip
        command = self.command()
        uid = self.uid if self.uid is not None else self.image.uid
        gid = self.uid if self.uid is not None else self.image.gid
        return {
            "Image": self.image.ref,
            "Entrypoint": command[:1],
            "Cmd": command[1:],
            "User": f"{uid}:{gid}",
            "WorkingDir": self.image.workdir,
            "Hostname": HOSTNAME,
            "Env": [f"{name}={value}" for name, value in env.items()],
            "Labels": {LABEL_AGENT: self.agent_id, LABEL_SESSION: self.session_id, **self.extra_labels},
            "NetworkDisabled": True,
            "HostConfig": self.host_config(),
        }

    def host_config(self) -> dict[str, Any]:
        security = ["no-new-privileges"]
        if self.seccomp_profile is not None:
            security.append(f"seccomp={self.seccomp_profile}")
        return {
            "Init": self.init,
            "NetworkMode": "none",
            "Binds": [
                f"{self.runner_dir}:{RUNNER_MOUNT}:ro",
                f"{self.scratch}:{self.image.workdir}",
                f"{self.socket_dir}:{SOCKET_MOUNT}",
                *(f"{self.etc_dir / name}:/etc/{name}:ro" for name in ("passwd", "group") if self.etc_dir),
                *(f"{host}:{DRIVER_MOUNT}/{name}:ro" for name, host in sorted(self.driver_files.items())),
                *(f"{node}:/dev/{Path(node).name}:ro" for node in self.devices if not _is_char_device(node)),
            ],
            "Devices": [
                {"PathOnHost": node, "PathInContainer": f"/dev/{Path(node).name}", "CgroupPermissions": "rw"}
                for node in self.devices
                if _is_char_device(node)
            ],
            "ReadonlyRootfs": True,
            "Tmpfs": {"/tmp": f"rw,nosuid,nodev,size={self.tmp_size}"},
            "ShmSize": self.tmp_size,
            "CapDrop": ["ALL"],
            "SecurityOpt": security,
            "MaskedPaths": list(MASKED_PATHS),
            **limit_fields(self.limits),
            **({"DeviceRequests": [self.device_request()]} if self.gpu_requests else {}),
            **({"CgroupParent": self.cgroup_parent} if self.cgroup_parent else {}),
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"}},
        }


    def device_request(self) -> dict[str, Any]:
        """The Engine API's device request for this container's GPUs (the NVIDIA toolkit's
        "compute" and "utility" capabilities: CUDA and nvidia-smi, nothing for graphics)."""
        return {
            "Driver": "nvidia",
            "DeviceIDs": list(self.gpu_requests),
            "Capabilities": [["gpu", "compute", "utility"]],
        }

    def driver_environ(self) -> dict[str, str]:
        """Where the loader and the shell find the bound driver files."""
        if not self.driver_files:
            return {}
        return {"LD_LIBRARY_PATH": f"{DRIVER_MOUNT}/lib", "PATH": f"{BASE_ENV['PATH']}:{DRIVER_MOUNT}/bin"}


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def limit_fields(limits: Limits) -> dict[str, int]:
    """Memory (no swap beyond it), CPU and PID limits as the Engine API names them
    (in a create's HostConfig and in ``POST /containers/{id}/update``)."""
    return {
        "Memory": limits.mem,
        "MemorySwap": limits.mem,
        "NanoCpus": int(limits.cpu * NANO) if limits.cpu > 0 else 0,
        "PidsLimit": limits.pids,
    }


def container_name(agent_id: str, session_id: str) -> str:
    return f"bai-{agent_id}-{session_id}"


def cgroup_path(proc_cgroup: str, version: str) -> str | None:
    """The cgroup (relative to a hierarchy's root, no leading slash) of a process, from
    its /proc/PID/cgroup text: v2's unified line, or v1's memory controller's line."""
    for line in proc_cgroup.splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if version == "v2" and controllers == "":
            return path.lstrip("/")
        if version == "v1" and "memory" in controllers.split(","):
            return path.lstrip("/")
    return None


def parent_pid(proc_stat: str) -> int:
    """The PPid field of a /proc/PID/stat text (after the parenthesised command)."""
    return int(proc_stat.rpartition(")")[2].split()[1])


@dataclass(frozen=True)
class SandboxRecord:
    """What a restarted agent needs to take a running container back: written when the
    container becomes a session's (created for it, or claimed from the pool), kept while it
    lives, in ``<data_dir>/docker/sessions/<session id>.json`` (root's, never bound)."""

    spec: SandboxSpec
    container_id: str
    created_as: str  # the id it was created under (a pooled one's: its pool name)
    environment: str  # the image's bai.environment label, "python:3.11"
    cpu: str  # its limits, as claimed
    mem: int
    pids: int
    socket_dir: str
    scratch: dict[str, Any]  # bai.agent.scratch.Scratch's fields
    parent_cgroup: bool  # whether it runs under a session cgroup of ours
    gpus: tuple[int, ...] = ()  # the device indexes it holds
    uid: int | None = None  # the host uid it runs as (None: the image's)
    #: the runner's host pid: on re-attach only it may connect (the user's code runs already)
    runner_pid: int | None = None
    version: int = 1

    @property
    def limits(self) -> Limits:
        return Limits(cpu=Decimal(self.cpu), mem=self.mem, pids=self.pids)

    def to_json(self) -> str:
        body = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "spec"}
        body["spec"] = self.spec.model_dump(mode="json")
        body["gpus"] = list(self.gpus)
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SandboxRecord:
        """Raises ValueError (a malformed or foreign record: the caller drops it)."""
        try:
            body = json.loads(text)
            if not isinstance(body, dict) or body.get("version") != 1:
                raise ValueError("not a version 1 record")
            spec = SandboxSpec.model_validate(body.pop("spec"))
            gpus = tuple(int(index) for index in body.pop("gpus", ()))
            record = cls(spec=spec, gpus=gpus, **body)
            if not Decimal(record.cpu).is_finite():
                raise ValueError(f"cpu {record.cpu!r}")
        except (TypeError, KeyError, ArithmeticError, ValidationError) as exc:
            raise ValueError(f"a malformed sandbox record: {exc}") from exc
        return record


def scratch_fields(scratch: Scratch) -> dict[str, Any]:
    return {
        "path": str(scratch.path),
        "kind": scratch.kind,
        "cap": scratch.cap,
        "image": str(scratch.image) if scratch.image is not None else None,
        "baseline": scratch.baseline,
    }


def scratch_from(fields: Mapping[str, Any]) -> Scratch:
    """The Scratch a record names. Raises ValueError."""
    kind = fields.get("kind")
    if kind not in ("hostfile", "memory", "hostdir"):
        raise ValueError(f"a scratch disk of kind {kind!r}")
    try:
        cap, image = fields.get("cap"), fields.get("image")
        return Scratch(
            path=Path(fields["path"]),
            kind=kind,
            cap=int(cap) if cap is not None else None,
            image=Path(image) if image is not None else None,
            baseline=int(fields.get("baseline", 0)),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a malformed scratch record: {exc}") from exc


def passwd_files(user: str, uid: int, home: str) -> dict[str, str]:
    """The /etc/passwd and /etc/group of a container that runs as host ``uid``: the image's
    user under that number (``whoami``, ``ls -l`` and ``getpwuid`` find a name), root and
    nobody; no other account, since nothing in a session logs in."""
    return {
        "passwd": (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"{user}:x:{uid}:{uid}::{home}:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "group": f"root:x:0:\n{user}:x:{uid}:\nnogroup:x:65534:\n",
    }
