"""A session's container as the Engine API takes it: the create body, the limits' fields,
the generated /etc/passwd, and the container's cgroup read from /proc. Pure but for /proc reads;
unit-tested without Docker."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bai.agent.backends.docker.kernel_images import KernelImage
from bai.agent.backends.local.bwrap import BASE_ENV, HOSTNAME, RUNNER_BOOT, RUNNER_MOUNT
from bai.agent.cgroups import Limits

LABEL_AGENT = "bai.agent"
LABEL_SESSION = "bai.session"  # the id it was created for (a pooled one's: its pool name)
LABEL_DATA_DIR = "bai.data-dir"  # a digest of the agent's data dir: two agents with one id keep apart
SOCKET_MOUNT = "/run/bai"  # the per-sandbox host dir holding the agent's listening socket
SOCKET_NAME = "runner.sock"
DRIVER_MOUNT = "/usr/local/nvidia"  # the host driver's libraries and tools, where no toolkit injects them
NANO = Decimal(10**9)
#: Docker's default masked paths (moby's oci defaults) and /sys/fs/cgroup: the container sees an
#: empty dir there, not the cgroup hierarchy (the local sandbox shows no /sys/fs/cgroup at all)
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    "/sys/fs/cgroup",
)  # fmt: skip


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
