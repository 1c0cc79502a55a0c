"""NVIDIA GPUs: what the host has, and which session holds which device.

Discovery (``discover``) asks NVML through ctypes (``libnvidia-ml.so.1``, the driver's
own library) and falls back to ``nvidia-smi`` where NVML cannot be loaded; both give
each device's index, UUID, name, memory and the minor number of its ``/dev/nvidia<N>``
node. ``BAI_AGENT_FAKE_GPUS`` replaces the hardware with an inventory of regular files
(tests and demonstrations on machines without a GPU), bound into sandboxes exactly as
device nodes would be.

``GpuAllocator`` is I/O-free: it hands whole devices to sessions (the ``cuda.device``
slot counts devices) and takes them back; a device belongs to one session at a time.
A sandbox sees the nodes of its own devices and the driver's shared control nodes, and
``CUDA_VISIBLE_DEVICES`` names its devices by UUID; no other device node exists inside.

Callers: the local backend (capacity, a sandbox's binds and variables) and the agent.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: the driver's nodes every CUDA process opens, besides its devices' own
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
SMI_QUERY = "index,uuid,name,memory.total,pci.bus_id"


class GpuError(Exception):
    """Discovery found something it cannot use, or an allocation cannot be served."""


@dataclass(frozen=True)
class GpuDevice:
    index: int
    uuid: str
    name: str
    memory: int  # bytes
    minor: int  # /dev/nvidia<minor>

    @property
    def node(self) -> str:
        return f"nvidia{self.minor}"


@dataclass(frozen=True)
class GpuInventory:
    devices: tuple[GpuDevice, ...]
    dev_dir: Path  # where the nodes are: /dev, or a fake inventory's dir

    def nodes_for(self, devices: Iterable[GpuDevice]) -> list[Path]:
        """The nodes a sandbox with ``devices`` gets: theirs, and the control nodes that exist."""
        chosen = [self.dev_dir / device.node for device in devices]
        if not chosen:
            return []
        return chosen + [self.dev_dir / name for name in CONTROL_NODES if (self.dev_dir / name).exists()]


# -- discovery ------------------------------------------------------------------------


def discover(fake: int = 0, fake_dir: Path | None = None) -> GpuInventory:
    """The host's GPUs (none when there is no driver), or ``fake`` pretend ones."""
    if fake:
        if fake_dir is None:
            raise GpuError("a fake GPU inventory needs a directory for its nodes")
        return fake_inventory(fake, fake_dir)
    devices = _from_nvml()
    if devices is None:
        devices = _from_smi()
    return GpuInventory(tuple(devices or ()), Path("/dev"))


def fake_inventory(count: int, directory: Path) -> GpuInventory:
    """``count`` devices whose "nodes" are regular files naming them, plus a control node."""
    directory.mkdir(parents=True, exist_ok=True)
    devices = []
    for index in range(count):
        device = GpuDevice(index, f"GPU-fake-{index:04d}", "Fake GPU", 16 * 2**30, index)
        (directory / device.node).write_text(f"{device.uuid}\n")
        devices.append(device)
    (directory / "nvidiactl").write_text("control\n")
    return GpuInventory(tuple(devices), directory)


def parse_smi(text: str, minors: dict[str, int] | None = None) -> list[GpuDevice]:
    """``nvidia-smi --query-gpu=index,uuid,name,memory.total,pci.bus_id --format=csv,noheader,nounits``.
    ``minors`` maps a PCI bus id (lower case) to its minor number; without one, the index is used."""
    devices = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 5:
            raise GpuError(f"nvidia-smi line {line_no}: expected 5 fields, got {len(fields)}: {line!r}")
        index, uuid, name, memory, bus = fields
        try:
            number, mib = int(index), int(float(memory))
        except ValueError:
            raise GpuError(f"nvidia-smi line {line_no}: bad index or memory: {line!r}") from None
        minor = (minors or {}).get(_bus_key(bus), number)
        devices.append(GpuDevice(number, uuid, name, mib * 2**20, minor))
    return devices


def parse_proc_information(text: str) -> tuple[str, int] | None:
    """``/proc/driver/nvidia/gpus/<bus>/information``: (bus id, minor number), or None."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    try:
        return _bus_key(values["Bus Location"]), int(values["Device Minor"])
    except (KeyError, ValueError):
        return None


def _bus_key(bus: str) -> str:
    """PCI bus ids differ in case and in the domain's width between NVML, nvidia-smi and /proc."""
    bus = bus.lower()
    domain, sep, rest = bus.partition(":")
    return f"{int(domain, 16):04x}:{rest}" if sep and len(domain) > 4 else bus


def _proc_minors() -> dict[str, int]:
    minors: dict[str, int] = {}
    for info in Path("/proc/driver/nvidia/gpus").glob("*/information"):
        with contextlib.suppress(OSError):
            parsed = parse_proc_information(info.read_text())
            if parsed is not None:
                minors[parsed[0]] = parsed[1]
    return minors


def _from_smi() -> list[GpuDevice] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return parse_smi(done.stdout, _proc_minors())
    except (OSError, subprocess.SubprocessError, GpuError) as exc:
        log.warning("nvidia-smi is there but failed: %s", exc)
        return None


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _from_nvml() -> list[GpuDevice] | None:
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint()
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        return [_nvml_device(nvml, index) for index in range(count.value)]
    except GpuError as exc:
        log.warning("NVML: %s", exc)
        return None
    finally:
        nvml.nvmlShutdown()


def _nvml_device(nvml: ctypes.CDLL, index: int) -> GpuDevice:
    handle = ctypes.c_void_p()
    name, uuid = ctypes.create_string_buffer(96), ctypes.create_string_buffer(96)
    memory, minor = _Memory(), ctypes.c_uint()
    calls = (
        nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)),
        nvml.nvmlDeviceGetName(handle, name, 96),
        nvml.nvmlDeviceGetUUID(handle, uuid, 96),
        nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)),
        nvml.nvmlDeviceGetMinorNumber(handle, ctypes.byref(minor)),
    )
    if any(calls):
        raise GpuError(f"device {index}: NVML calls answered {calls}")
    return GpuDevice(index, uuid.value.decode(), name.value.decode(), memory.total, minor.value)


# -- the driver's user-space side, for containers -------------------------------------

#: the driver's libraries a CUDA or NVML program loads (sonames; a trailing "." matches any
#: version): the host's, since they must match its kernel module exactly. A container gets
#: them read-only where no NVIDIA container toolkit injects them (bai.agent.backends.docker.backend)
DRIVER_LIBRARIES = (
    "libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1", "libnvidia-nvvm.so.4",
    "libcudadebugger.so.1", "libnvidia-gpucomp.so.", "libnvidia-allocator.so.1", "libnvidia-cfg.so.1",
)  # fmt: skip
DRIVER_BINARIES = ("nvidia-smi",)
LDCONFIG = ("/sbin/ldconfig", "/usr/sbin/ldconfig")


def parse_ldconfig(text: str, arch: str = "x86-64") -> dict[str, Path]:
    """``ldconfig -p``: soname → path, for the libraries of ``arch`` that are the driver's."""
    found: dict[str, Path] = {}
    for line in text.splitlines():
        name, sep, path = line.strip().partition(" => ")
        if not sep:
            continue
        soname, _, flags = name.partition(" ")
        if arch not in flags or soname in found:
            continue
        if any(soname == wanted or (wanted.endswith(".") and soname.startswith(wanted)) for wanted in DRIVER_LIBRARIES):
            found[soname] = Path(path)
    return found


def driver_files() -> dict[str, Path]:
    """The host's driver libraries and tools: the name a container sees (``lib/<soname>``,
    ``bin/<tool>``) → the real file on the host (links resolved). Empty without a driver."""
    ldconfig = next((path for path in LDCONFIG if Path(path).exists()), None)
    files: dict[str, Path] = {}
    if ldconfig is not None:
        try:
            listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("ldconfig -p failed: %s", exc)
            listing = ""
        for soname, path in parse_ldconfig(listing).items():
            with contextlib.suppress(OSError):
                files[f"lib/{soname}"] = path.resolve(strict=True)
    for tool in DRIVER_BINARIES:
        found = shutil.which(tool)
        if found is not None:
            files[f"bin/{tool}"] = Path(found).resolve()
    return files


# -- allocation -----------------------------------------------------------------------


class GpuAllocator:
    """Whole devices for sessions. I/O-free."""

    def __init__(self, devices: Iterable[GpuDevice]) -> None:
        self.devices = tuple(devices)
        self._holder: dict[int, str] = {}  # device index → session id

    @property
    def total(self) -> int:
        return len(self.devices)

    def free(self) -> list[GpuDevice]:
        return [device for device in self.devices if device.index not in self._holder]

    def allocate(self, session_id: str, count: int) -> list[GpuDevice]:
        """``count`` free devices for ``session_id`` (the lowest indices). Raises GpuError."""
        if count <= 0:
            return []
        if any(holder == session_id for holder in self._holder.values()):
            raise GpuError(f"session {session_id} already holds GPUs")
        free = self.free()
        if len(free) < count:
            raise GpuError(f"{count} GPU(s) asked for, {len(free)} of {self.total} free")
        chosen = free[:count]
        for device in chosen:
            self._holder[device.index] = session_id
        return chosen

    def reserve(self, session_id: str, indexes: Iterable[int]) -> None:
        """Give ``session_id`` these devices again (a re-attached session's). Raises
        GpuError when one is unknown or held by another session."""
        wanted = set(indexes)
        known = {device.index for device in self.devices}
        if wanted - known:
            raise GpuError(f"no GPU {sorted(wanted - known)[0]} on this host")
        taken = [index for index in wanted if self._holder.get(index, session_id) != session_id]
        if taken:
            raise GpuError(f"GPU {taken[0]} is held by session {self._holder[taken[0]]}")
        for index in wanted:
            self._holder[index] = session_id

    def release(self, session_id: str) -> None:
        for index in [i for i, holder in self._holder.items() if holder == session_id]:
            del self._holder[index]

    def held_by(self, session_id: str) -> list[GpuDevice]:
        return [device for device in self.devices if self._holder.get(device.index) == session_id]


def visible_devices(devices: Iterable[GpuDevice]) -> str:
    """CUDA_VISIBLE_DEVICES for a sandbox: its devices by UUID (indices would be the host's)."""
    return ",".join(device.uuid for device in devices)


def gpu_count(resources: dict[str, str]) -> int:
    """Whole devices asked for in a spec's resources (``cuda.device``). Raises GpuError."""
    raw = resources.get("cuda.device", "0")
    try:
        amount = float(raw)
    except ValueError:
        raise GpuError(f"cuda.device: not a number: {raw!r}") from None
    if amount < 0 or amount != int(amount):
        raise GpuError(f"cuda.device: whole devices only, got {raw}")
    return int(amount)

