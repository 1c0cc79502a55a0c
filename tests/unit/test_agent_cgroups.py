"""Cgroup drivers against fake hierarchies in a temp dir (no kernel cgroups needed)."""

from __future__ import annotations

import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from bai.agent import cgroups
from bai.agent.cgroups import CgroupV1, CgroupV2, Limits

MOUNTS = """\
sysfs /sys sysfs rw 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,blkio 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0
"""
LIMITS = Limits(cpu=Decimal("0.5"), mem=256 * 2**20, pids=64)


def test_find_v1_mounts_handles_joint_controllers() -> None:
    found = cgroups.find_v1_mounts(MOUNTS)
    assert found == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
        "pids": Path("/sys/fs/cgroup/pids"),
        "blkio": Path("/sys/fs/cgroup/blkio"),
    }


def test_v1_needs_every_controller() -> None:
    with pytest.raises(cgroups.CgroupError, match="blkio"):
        CgroupV1("a", {"memory": Path("/m"), "cpu": Path("/c"), "cpuacct": Path("/c"), "pids": Path("/p")})


def test_parse_blkio_and_io_stat() -> None:
    blkio = "8:0 Read 4096\n8:0 Write 100\n8:0 Sync 1\n8:16 Read 1\n8:16 Write 2\nTotal 4200\n"
    assert cgroups.parse_blkio(blkio) == (4097, 102)
    io_stat = "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=2\n"
    assert cgroups.parse_io_stat(io_stat) == (11, 22)


def v1_tree(tmp_path: Path) -> CgroupV1:
    mounts = {}
    for name in ("memory", "cpu", "pids", "blkio"):
        (tmp_path / name).mkdir()
        mounts[name] = tmp_path / name
    mounts["cpuacct"] = mounts["cpu"]  # a joint mount, as on many hosts
    return CgroupV1("agent1", mounts, disks=["254:0"])


def test_v1_create_limits_stats_and_remove(tmp_path: Path) -> None:
    driver = v1_tree(tmp_path)
    assert len(driver.roots()) == 4
    memory_dir = tmp_path / "memory" / "bai" / "agent1" / "s1"
    memory_dir.mkdir(parents=True)
    (memory_dir / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    cgroup = driver.create("s1", LIMITS)
    assert cgroup.name == "bai/agent1/s1"
    assert cgroup.join_file == "tasks"
    assert (memory_dir / "memory.limit_in_bytes").read_text() == str(256 * 2**20)
    assert (memory_dir / "memory.memsw.limit_in_bytes").read_text() == str(256 * 2**20)
    cpu_dir = tmp_path / "cpu" / "bai" / "agent1" / "s1"
    assert (cpu_dir / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu_dir / "cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "pids" / "bai" / "agent1" / "s1" / "pids.max").read_text() == "64"
    blkio_rule = tmp_path / "blkio" / "bai" / "agent1" / "s1" / "blkio.throttle.write_bps_device"
    assert blkio_rule.read_text() == f"254:0 {2**40}"  # turns v1 I/O accounting on

    (cpu_dir / "cpuacct.usage").write_text("2500000000\n")
    (memory_dir / "memory.usage_in_bytes").write_text("1000\n")
    (memory_dir / "memory.max_usage_in_bytes").write_text("5000\n")
    (memory_dir / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    blkio_dir = tmp_path / "blkio" / "bai" / "agent1" / "s1"
    (blkio_dir / "blkio.throttle.io_service_bytes_recursive").write_text("8:0 Read 7\n8:0 Write 9\nTotal 16\n")
    stats = driver.stats(cgroup)
    assert stats == cgroups.CgroupStats(
        cpu_used_ms=2500, mem_current=1000, mem_peak=5000, oom_kills=2, io_read=7, io_write=9
    )
    driver.reset_peak(cgroup)
    assert (memory_dir / "memory.max_usage_in_bytes").read_text() == "0"
    assert driver.leftovers() == ["s1"]


def test_v1_raising_the_memory_limit_raises_memsw_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = v1_tree(tmp_path)
    memory_dir = tmp_path / "memory" / "bai" / "agent1" / "s1"
    memory_dir.mkdir(parents=True)
    (memory_dir / "memory.memsw.limit_in_bytes").write_text("1000")  # below the new limit
    writes: list[str] = []
    original = cgroups._write

    def spy(path: Path, text: str) -> None:
        writes.append(path.name)
        original(path, text)

    monkeypatch.setattr(cgroups, "_write", spy)
    driver.create("s1", LIMITS)
    assert writes.index("memory.memsw.limit_in_bytes") < writes.index("memory.limit_in_bytes")


def test_v2_create_limits_and_stats(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    # the kernel creates these files in every new cgroup; the fake needs them up front
    for sub in ("bai", "bai/agent1"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "cgroup.subtree_control").write_text("")
    driver = CgroupV2("agent1", tmp_path)
    session_dir = tmp_path / "bai" / "agent1" / "s1"
    session_dir.mkdir()
    (session_dir / "memory.swap.max").write_text("max")
    cgroup = driver.create("s1", LIMITS)
    assert cgroup.join_file == "cgroup.procs"
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +cpu +pids +io"
    assert (session_dir / "memory.max").read_text() == str(256 * 2**20)
    assert (session_dir / "memory.swap.max").read_text() == "0"
    assert (session_dir / "cpu.max").read_text() == "50000 100000"
    assert (session_dir / "pids.max").read_text() == "64"
    (session_dir / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1\nsystem_usec 2\n")
    (session_dir / "memory.current").write_text("10\n")
    (session_dir / "memory.peak").write_text("20\n")
    (session_dir / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    (session_dir / "io.stat").write_text("8:0 rbytes=3 wbytes=4 rios=1 wios=1\n")
    assert driver.stats(cgroup) == cgroups.CgroupStats(
        cpu_used_ms=1500, mem_current=10, mem_peak=20, oom_kills=1, io_read=3, io_write=4
    )


def test_v2_needs_its_controllers(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu pids\n")
    with pytest.raises(cgroups.CgroupError, match="memory"):
        CgroupV2("a", tmp_path)


def test_detect_none_and_unusable(tmp_path: Path) -> None:
    assert cgroups.detect_driver("a", "none") is None
    with pytest.raises(cgroups.CgroupError):
        cgroups.detect_driver("a", "v2", base=tmp_path)


def test_inotify_watch_turns_readable_on_modify(tmp_path: Path) -> None:
    target = tmp_path / "memory.events"
    target.write_text("oom_kill 0\n")
    fd = cgroups.inotify_modify_watch(target)
    assert fd is not None
    try:
        with pytest.raises(BlockingIOError):
            os.read(fd, 4096)
        target.write_text("oom_kill 1\n")
        assert os.read(fd, 4096)
    finally:
        os.close(fd)


def test_block_devices_skip_loop_and_ram(tmp_path: Path) -> None:
    for name, dev in (("vda", "254:0"), ("loop0", "7:0"), ("ram0", "1:0"), ("nvme0n1", "259:0")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dev").write_text(dev + "\n")
    assert cgroups.block_devices(tmp_path) == ["259:0", "254:0"]
    assert cgroups.block_devices(tmp_path / "missing") == []


def test_remove_if_stale_only_takes_old_empty_cgroups(tmp_path: Path) -> None:
    driver = v1_tree(tmp_path)
    for root in driver.roots():
        (root / "bai" / "agent1" / "old").mkdir(parents=True)
    assert not driver.remove_if_stale("old", min_age_s=3600)  # too young
    busy = tmp_path / "memory" / "bai" / "agent1" / "old" / "cgroup.procs"
    busy.write_text("4242\n")
    assert not driver.remove_if_stale("old", min_age_s=0)  # has a process
    busy.unlink()
    assert driver.remove_if_stale("old", min_age_s=0)
    assert driver.leftovers() == []
    assert not driver.remove_if_stale("never-was", min_age_s=0)


# -- per-run meters -----------------------------------------------------------------------


def test_kernel_resets_peak_from_612() -> None:
    releases = {"6.12.0": True, "6.18.44-fc-v769": True, "7.1": True, "6.11.9-arch1-1": False, "5.15.0-91": False}
    for release, expected in releases.items():
        assert cgroups.kernel_resets_peak(release) is expected, release
    assert not cgroups.kernel_resets_peak("garbage")


def test_v1_meter_measures_a_run_and_resets_the_peak(tmp_path: Path) -> None:
    driver = v1_tree(tmp_path)
    cgroup = driver.create("s1", LIMITS)
    memory_dir = tmp_path / "memory" / "bai" / "agent1" / "s1"
    cpu_dir = tmp_path / "cpu" / "bai" / "agent1" / "s1"
    (cpu_dir / "cpuacct.usage").write_text("1000000000\n")  # ns
    (memory_dir / "memory.max_usage_in_bytes").write_text("900000\n")
    meter = driver.open_meter(cgroup)
    try:
        assert meter.resets_peak
        (memory_dir / "memory.max_usage_in_bytes").write_text("800000\n")  # used between runs
        meter.start()
        assert (memory_dir / "memory.max_usage_in_bytes").read_text().strip("\n0") == ""  # "0" written
        # what the kernel would show at the run's end; the file stays open, no re-open is needed
        with open(cpu_dir / "cpuacct.usage", "r+") as f:
            f.write("1250500000\n")
        with open(memory_dir / "memory.max_usage_in_bytes", "r+") as f:
            f.write("300000\n")
        usage = meter.stop()
        assert usage == cgroups.RunUsage(cpu_ms=250.5, mem_peak=300000, mem_peak_scope="run")
        assert meter.session_peak == 800000  # the highest seen, for the session's own figures
    finally:
        meter.close()


def v2_session(tmp_path: Path, peak_resets: bool) -> tuple[CgroupV2, cgroups.SessionCgroup, Path]:
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    for sub in ("", "bai", "bai/agent1"):
        (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / sub / "cgroup.subtree_control").write_text("")
    driver = CgroupV2("agent1", tmp_path, peak_resets=peak_resets)
    cgroup = driver.create("s1", LIMITS)
    path = cgroup.dirs[0]
    (path / "cpu.stat").write_text("usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\n")
    (path / "memory.peak").write_text("7000000\n")
    return driver, cgroup, path


@pytest.mark.parametrize("peak_resets", [True, False])
def test_v2_meter_reads_cpu_stat_and_memory_peak(tmp_path: Path, peak_resets: bool) -> None:
    driver, cgroup, path = v2_session(tmp_path, peak_resets)
    meter = driver.open_meter(cgroup)
    try:
        assert meter.resets_peak is peak_resets
        meter.start()
        with open(path / "cpu.stat", "r+") as f:
            f.write("usage_usec 2004500\nuser_usec 1504000\nsystem_usec 500500\n")
        usage = meter.stop()
        assert usage.cpu_ms == 4.5
        # the fake has no per-descriptor peak: a reset shows as the "0" written over it
        assert usage.mem_peak == (0 if peak_resets else 7000000)
        assert usage.mem_peak_scope == ("run" if peak_resets else "session")
    finally:
        meter.close()


def test_v2_meter_falls_back_to_the_session_peak_when_a_reset_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, cgroup, _ = v2_session(tmp_path, peak_resets=True)

    def refuse(fd: int, data: bytes, offset: int) -> int:
        raise OSError(22, "Invalid argument")  # a kernel whose memory.peak takes no writes

    monkeypatch.setattr(os, "pwrite", refuse)
    meter = driver.open_meter(cgroup)
    try:
        assert not meter.resets_peak
        meter.start()
        assert meter.stop() == cgroups.RunUsage(cpu_ms=0.0, mem_peak=7000000, mem_peak_scope="session")
    finally:
        meter.close()


def test_v2_meter_needs_usage_usec(tmp_path: Path) -> None:
    driver, cgroup, path = v2_session(tmp_path, peak_resets=False)
    (path / "cpu.stat").write_text("nr_periods 0\n")
    meter = driver.open_meter(cgroup)
    try:
        with pytest.raises(OSError, match="usage_usec"):
            meter.start()
    finally:
        meter.close()


def test_meter_fails_with_oserror_once_the_files_are_gone(tmp_path: Path) -> None:
    driver = v1_tree(tmp_path)
    cgroup = driver.create("s1", LIMITS)
    (tmp_path / "cpu" / "bai" / "agent1" / "s1" / "cpuacct.usage").write_text("0\n")
    with pytest.raises(OSError):
        driver.open_meter(cgroup)  # no memory.max_usage_in_bytes in this fake


def test_the_parents_are_made_again_when_they_went_away(tmp_path: Path) -> None:
    driver = v1_tree(tmp_path)
    driver.create("s1", LIMITS)
    for root in driver.roots():
        shutil.rmtree(root / "bai" / "agent1")  # an operator's cleanup, between two sessions
    cgroup = driver.create("s2", LIMITS)
    assert all(path.is_dir() for path in cgroup.dirs)
    assert (tmp_path / "pids" / "bai" / "agent1" / "s2" / "pids.max").read_text() == "64"
