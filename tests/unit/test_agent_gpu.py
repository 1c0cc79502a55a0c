"""GPU discovery parsing, allocation and the sandbox's view of its devices (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bai.agent import gpu
from bai.agent.backends.local.bwrap import SandboxCommand
from bai.agent.gpu import GpuAllocator, GpuDevice, GpuError

SMI = """\
0, GPU-5d1f8a3e-0000-1111-2222-333344445555, NVIDIA H100 80GB HBM3, 81559, 00000000:19:00.0
1, GPU-aa11bb22-0000-1111-2222-333344445555, NVIDIA H100 80GB HBM3, 81559, 00000000:3B:00.0

"""

PROC_INFO = """\
Model: 		 NVIDIA H100 80GB HBM3
IRQ:   		 0
GPU UUID: 	 GPU-aa11bb22-0000-1111-2222-333344445555
Video BIOS: 	 96.00.99.00.01
Bus Type: 	 PCIe
DMA Size: 	 52 bits
DMA Mask: 	 0xfffffffffffff
Bus Location: 	 0000:3b:00.0
Device Minor: 	 4
GPU Excluded:	 No
"""


def devices(n: int) -> list[GpuDevice]:
    return [GpuDevice(i, f"GPU-{i}", "Test GPU", 2**30, i) for i in range(n)]


def test_nvidia_smi_csv_is_parsed_with_minors_from_proc() -> None:
    bus, minor = gpu.parse_proc_information(PROC_INFO) or ("", -1)
    assert (bus, minor) == ("0000:3b:00.0", 4)
    parsed = gpu.parse_smi(SMI, {bus: minor})
    assert [(d.index, d.minor, d.node) for d in parsed] == [(0, 0, "nvidia0"), (1, 4, "nvidia4")]
    assert parsed[0].uuid == "GPU-5d1f8a3e-0000-1111-2222-333344445555"
    assert parsed[0].name == "NVIDIA H100 80GB HBM3" and parsed[0].memory == 81559 * 2**20


@pytest.mark.parametrize("line", ["0, GPU-x, name, 100", "zero, GPU-x, name, 100, 0000:01:00.0", "0, u, n, lots, b"])
def test_bad_nvidia_smi_lines_are_refused(line: str) -> None:
    with pytest.raises(GpuError, match="nvidia-smi line 1"):
        gpu.parse_smi(line)


def test_proc_information_without_a_minor_is_ignored() -> None:
    assert gpu.parse_proc_information("Model: x\nBus Location: 0000:01:00.0\n") is None


def test_allocation_gives_whole_free_devices_and_takes_them_back() -> None:
    allocator = GpuAllocator(devices(3))
    assert [d.index for d in allocator.allocate("a", 2)] == [0, 1]
    with pytest.raises(GpuError, match=r"2 GPU.*1 of 3 free"):
        allocator.allocate("b", 2)
    assert [d.index for d in allocator.allocate("b", 1)] == [2]
    with pytest.raises(GpuError, match="already holds"):
        allocator.allocate("b", 1)
    allocator.release("a")
    assert [d.index for d in allocator.free()] == [0, 1]
    assert [d.index for d in allocator.held_by("b")] == [2]
    assert allocator.allocate("c", 0) == []


@pytest.mark.parametrize(("raw", "count"), [("1", 1), ("2.0", 2), ("0", 0)])
def test_gpu_count_reads_whole_devices(raw: str, count: int) -> None:
    assert gpu.gpu_count({"cuda.device": raw}) == count
    assert gpu.gpu_count({}) == 0


@pytest.mark.parametrize("raw", ["0.5", "-1", "one"])
def test_gpu_count_refuses_parts_and_nonsense(raw: str) -> None:
    with pytest.raises(GpuError, match=r"cuda\.device"):
        gpu.gpu_count({"cuda.device": raw})


def test_a_fake_inventory_and_the_nodes_a_sandbox_gets(tmp_path: Path) -> None:
    inventory = gpu.discover(fake=2, fake_dir=tmp_path)
    assert [d.uuid for d in inventory.devices] == ["GPU-fake-0000", "GPU-fake-0001"]
    assert (tmp_path / "nvidia1").read_text() == "GPU-fake-0001\n"
    second = inventory.devices[1]
    assert inventory.nodes_for([second]) == [tmp_path / "nvidia1", tmp_path / "nvidiactl"]
    assert inventory.nodes_for([]) == []
    assert gpu.visible_devices(inventory.devices) == "GPU-fake-0000,GPU-fake-0001"
    with pytest.raises(GpuError):
        gpu.discover(fake=1)


def test_bwrap_binds_each_device_at_its_own_name() -> None:
    command = SandboxCommand(
        bwrap="bwrap", layout=[], scratch=Path("/s"), runner_dir=Path("/r"), runner_python="python3",
        engine="python", environ={}, tmp_size=1, devices=("/dev/nvidia3", "/x/nvidiactl"),
    )  # fmt: skip
    argv = command.argv()
    dev = argv.index("--dev")
    assert argv[dev : dev + 8] == [
        "--dev", "/dev", "--dev-bind", "/dev/nvidia3", "/dev/nvidia3", "--dev-bind", "/x/nvidiactl", "/dev/nvidiactl",
    ]  # fmt: skip


def test_a_reattached_session_gets_its_own_devices_back() -> None:
    allocator = GpuAllocator(devices(3))
    allocator.reserve("a", [2])
    allocator.reserve("a", [2])  # again: the same holder
    assert [d.index for d in allocator.held_by("a")] == [2]
    assert [d.index for d in allocator.allocate("b", 2)] == [0, 1]  # never GPU 2
    with pytest.raises(GpuError, match="held by session b"):
        allocator.reserve("c", [0])
    with pytest.raises(GpuError, match="no GPU 7"):
        allocator.reserve("c", [7])
    assert allocator.held_by("c") == []


LDCONFIG_P = """1234 libs found in cache `/etc/ld.so.cache'
\tlibnvidia-ml.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libnvidia-ml.so.1
\tlibnvidia-ml.so.1 (libc6) => /lib/i386-linux-gnu/libnvidia-ml.so.1
\tlibnvidia-gpucomp.so.550.54.14 (libc6,x86-64) => /lib/x86_64-linux-gnu/libnvidia-gpucomp.so.550.54.14
\tlibcuda.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libcuda.so.1
\tlibcuda.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libcuda.so
\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12
\tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
garbage line
"""


def test_the_drivers_own_libraries_are_found_in_the_loader_cache() -> None:
    found = gpu.parse_ldconfig(LDCONFIG_P)
    assert found == {
        "libnvidia-ml.so.1": Path("/lib/x86_64-linux-gnu/libnvidia-ml.so.1"),
        "libnvidia-gpucomp.so.550.54.14": Path("/lib/x86_64-linux-gnu/libnvidia-gpucomp.so.550.54.14"),
        "libcuda.so.1": Path("/lib/x86_64-linux-gnu/libcuda.so.1"),
    }  # not the 32-bit ones, the dev links, nor the CUDA runtime (the image's or the wheel's)
    assert gpu.parse_ldconfig("") == {}


def test_a_host_without_a_driver_has_no_driver_files() -> None:
    files = gpu.driver_files()  # this machine has no NVIDIA driver; a GPU machine lists its own
    assert all(name.startswith(("lib/", "bin/")) and path.is_absolute() for name, path in files.items())
    if not Path("/proc/driver/nvidia").exists():
        assert not [name for name in files if name.startswith("lib/")]
