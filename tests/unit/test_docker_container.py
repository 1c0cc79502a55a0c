"""The Docker backend's pure parts (kernel images from labels, the container's create
body, cgroup paths from /proc) and the runner's ``--connect`` start, without Docker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from runner_client import BOOT, SRC, RunnerClient

from bai.agent.backends import BACKENDS
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.docker.container import (
    ContainerSpec,
    cgroup_path,
    container_name,
    limit_fields,
    parent_pid,
    passwd_files,
)
from bai.agent.backends.docker.kernel_images import KernelImage, environments_of, image_from
from bai.agent.backends.docker.record import SandboxRecord, scratch_fields, scratch_from
from bai.agent.cgroups import Limits
from bai.agent.config import AgentConfig
from bai.agent.scratch import Scratch
from bai.common.agent_rpc import SandboxSpec
from bai.runner.main import Options, parse_args
from bai.runner.protocol import Ready

LABELS = {
    "bai.environment": "python:3.11",
    "bai.runtime": "python",
    "bai.runner-python": "/usr/bin/python3",
    "bai.user": "work:1000",
    "bai.workdir": "/home/work",
}


def test_the_backend_is_registered_by_name() -> None:
    assert BACKENDS["docker"] is DockerBackend


def test_an_image_is_read_from_its_labels() -> None:
    image = image_from("bai/python:3.11", LABELS)
    assert image == KernelImage("bai/python:3.11", "python:3.11", "python", "/usr/bin/python3", 1000, 1000)
    assert image_from("x:1", {**LABELS, "bai.user": "root:0"}) is None  # never root
    assert image_from("x:1", {**LABELS, "bai.user": "work:x"}) is None
    assert image_from("x:1", {"bai.runtime": "python"}) is None
    assert image_from("x:1", {}) is None


def test_environments_name_each_image_and_the_highest_tag() -> None:
    def make(env: str, runtime: str = "python") -> KernelImage:
        image = image_from(f"bai/{env}", {**LABELS, "bai.environment": env, "bai.runtime": runtime})
        assert image is not None
        return image

    images = [make("python:3.9"), make("python:3.11"), make("python:3.10"), make("lua:5.4", "lua")]
    found = environments_of(images, ["python"])
    assert sorted(found) == ["python", "python:3.10", "python:3.11", "python:3.9"]
    assert found["python"].environment == "python:3.11"  # 3.11 > 3.9 as versions, not strings
    assert "lua" in environments_of(images, ["python", "lua"])


def spec(**overrides: object) -> ContainerSpec:
    image = image_from("bai/python:3.11", LABELS)
    assert image is not None
    values: dict[str, object] = {
        "agent_id": "a1",
        "session_id": "s1",
        "image": image,
        "limits": Limits(cpu=Decimal("0.5"), mem=2**28, pids=64),
        "runner_dir": Path("/opt/runner"),
        "scratch": Path("/data/scratch/s1"),
        "socket_dir": Path("/run/bai-docker/h/t"),
        "environ": {"FOO": "bar"},
        "tmp_size": 2**26,
        "seccomp_profile": json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}),
    }
    values.update(overrides)
    return ContainerSpec(**values)  # type: ignore[arg-type]


def test_the_create_body_carries_every_confinement() -> None:
    body = spec(preload=("json", "re")).body()
    assert body["Image"] == "bai/python:3.11" and body["User"] == "1000:1000"
    assert body["Entrypoint"] == ["/usr/bin/python3"]
    assert body["Cmd"][:2] == ["-I", "-c"]
    assert body["Cmd"][3:] == ["--connect", "/run/bai/runner.sock", "--engine", "python", "--preload", "json,re"]
    assert "FOO=bar" in body["Env"] and "HOME=/home/work" in body["Env"]
    assert body["Labels"] == {"bai.agent": "a1", "bai.session": "s1"}
    assert body["NetworkDisabled"] is True
    host = body["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True and host["Init"] is False
    assert host["CapDrop"] == ["ALL"]
    assert "/sys/fs/cgroup" in host["MaskedPaths"] and "/proc/kcore" in host["MaskedPaths"]
    assert host["SecurityOpt"] == ["no-new-privileges", 'seccomp={"defaultAction": "SCMP_ACT_ALLOW"}']
    assert host["Binds"] == [
        "/opt/runner:/opt/bai/bai/runner:ro",
        "/data/scratch/s1:/home/work",
        "/run/bai-docker/h/t:/run/bai",
    ]
    assert host["Tmpfs"] == {"/tmp": f"rw,nosuid,nodev,size={2**26}"}
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["PidsLimit"]) == (2**28, 2**28, 5 * 10**8, 64)
    off = spec(seccomp_profile=None, init=True).body()["HostConfig"]
    assert off["SecurityOpt"] == ["no-new-privileges"] and off["Init"] is True


def test_limits_and_names() -> None:
    assert limit_fields(Limits(cpu=Decimal(2), mem=100, pids=10)) == {
        "Memory": 100,
        "MemorySwap": 100,
        "NanoCpus": 2 * 10**9,
        "PidsLimit": 10,
    }
    assert container_name("agent-1", "sess.1") == "bai-agent-1-sess.1"


def test_cgroup_paths_and_parents_from_proc() -> None:
    v1 = "12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n"
    assert cgroup_path(v1, "v1") == "docker/abc"
    assert cgroup_path("0::/system.slice/docker-abc.scope\n", "v2") == "system.slice/docker-abc.scope"
    assert cgroup_path("4:cpu:/x\n", "v1") is None
    assert parent_pid("42 (a (weird) name) S 7 42 42 0") == 7
    assert parent_pid(Path(f"/proc/{os.getpid()}/stat").read_text()) == os.getppid()


def test_the_runner_takes_connect_or_fd_but_not_both() -> None:
    assert parse_args(["--connect", "/run/bai/runner.sock"]) == Options(connect="/run/bai/runner.sock")
    assert parse_args(["--fd", "3"]).connect == ""
    for argv in ([], ["--fd", "3", "--connect", "/x"], ["--connect"]):
        with pytest.raises(SystemExit):
            parse_args(argv)


def test_the_runner_connects_to_a_listening_socket(tmp_path: Path) -> None:
    path = tmp_path / "runner.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(30)
    proc = subprocess.Popen(
        ["/usr/bin/python3", "-I", "-c", BOOT % str(SRC), "--connect", str(path), "--engine", "python"],
        stdin=subprocess.DEVNULL,
        cwd=str(tmp_path),
    )
    try:
        conn, _ = listener.accept()
        with RunnerClient(conn, proc) as client:
            assert isinstance(client.recv(timeout=30), Ready)
            assert client.run("print(6 * 7)").stdout == "42\n"
    finally:
        listener.close()
        proc.kill()
        proc.wait()
    refused = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", BOOT % str(SRC), "--connect", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0 and "FileNotFoundError" in refused.stderr


def test_the_agent_and_server_commands_take_a_backend() -> None:
    from click.testing import CliRunner

    from bai.agent.cli import agent
    from bai.server.cli import server

    runner = CliRunner()
    for command in (agent, server):
        assert "[docker|local]" in runner.invoke(command, ["--help"]).output
    refused = runner.invoke(server, ["--backend", "podman"])
    assert refused.exit_code == 2 and "podman" in refused.output


def test_the_embedded_server_passes_the_backend_to_its_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bai.server.embedded import EmbeddedServer

    monkeypatch.delenv("BAI_AGENT_BACKEND", raising=False)
    assert EmbeddedServer(tmp_path, backend="docker").agent.config.backend == "docker"
    assert EmbeddedServer(tmp_path).agent.config.backend == "local"


async def test_an_unreachable_engine_stops_the_backend_start(tmp_path: Path) -> None:
    from bai.agent.backends.base import BackendUnavailable
    from bai.agent.config import AgentConfig

    config = AgentConfig(data_dir=tmp_path, backend="docker", docker_url=f"unix://{tmp_path}/none.sock")
    with pytest.raises(BackendUnavailable) as caught:
        await DockerBackend(config).start()
    assert "unreachable" in caught.value.message


def record(**changes: object) -> SandboxRecord:
    values: dict[str, object] = {
        "spec": SandboxSpec(session_id="s1", session_name="n", environment="python", resources={"cpu": "1"},
                            environ={"A": "b"}, exec_timeout_s=5.0),
        "container_id": "c" * 64, "created_as": "_pool-ab12", "environment": "python:3.11", "cpu": "1.5",
        "mem": 2**28, "pids": 64, "socket_dir": "/run/bai-docker/x/y",
        "scratch": scratch_fields(Scratch(Path("/d/s1"), "hostfile", 2**30, Path("/d/img/s1.img"), 4096)),
        "parent_cgroup": True, "gpus": (1, 3),
    }  # fmt: skip
    values.update(changes)
    return SandboxRecord(**values)  # type: ignore[arg-type]


def test_a_sandbox_record_survives_its_round_trip() -> None:
    original = record()
    again = SandboxRecord.from_json(original.to_json())
    assert again == original
    assert again.limits == Limits(cpu=Decimal("1.5"), mem=2**28, pids=64)
    assert scratch_from(again.scratch) == Scratch(Path("/d/s1"), "hostfile", 2**30, Path("/d/img/s1.img"), 4096)
    plain = scratch_fields(Scratch(Path("/d/s2"), "hostdir", None))
    assert scratch_from(plain) == Scratch(Path("/d/s2"), "hostdir", None)


@pytest.mark.parametrize(
    "text",
    [
        "not json", "[]", '{"version": 2}', '{"version": 1}', '{"version": 1, "spec": {}}',
        record(cpu="many").to_json(), record().to_json().replace('"pids":64', '"pids":64,"extra":1'),
    ],
)  # fmt: skip
def test_a_malformed_record_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"malformed|version|Expecting"):
        SandboxRecord.from_json(text)


def test_a_malformed_scratch_record_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        scratch_from({"path": "/x", "kind": "nfs"})
    with pytest.raises(ValueError, match="malformed"):
        scratch_from({"kind": "hostdir"})


def test_the_runner_waits_for_a_restarted_agent_when_told() -> None:
    argv = spec(reconnect_s=600).command()
    assert argv[-2:] == ["--reconnect", "600"]
    assert "--reconnect" not in spec().command()
    assert parse_args(["--connect", "/run/bai/runner.sock", "--reconnect", "2.5"]).reconnect == 2.5


def test_a_container_runs_as_its_own_host_uid_named_as_the_images_user() -> None:
    body = spec(uid=1_000_042, etc_dir=Path("/data/docker/etc/1000042")).body()
    assert body["User"] == "1000042:1000042"
    assert "USER=work" in body["Env"] and "LOGNAME=work" in body["Env"]
    binds = body["HostConfig"]["Binds"]
    assert "/data/docker/etc/1000042/passwd:/etc/passwd:ro" in binds
    assert "/data/docker/etc/1000042/group:/etc/group:ro" in binds
    assert spec().body()["User"] == "1000:1000"  # without one: the image's
    files = passwd_files("work", 1_000_042, "/home/work")
    assert "work:x:1000042:1000042::/home/work:/bin/bash\n" in files["passwd"]
    assert files["passwd"].startswith("root:x:0:0:") and files["group"].count("\n") == 3
    assert "work:x:1000042:\n" in files["group"]


def test_real_gpus_go_through_the_toolkit_or_the_drivers_files() -> None:
    toolkit = spec(gpu_requests=("GPU-aaaa", "GPU-bbbb")).body()["HostConfig"]
    assert toolkit["DeviceRequests"] == [
        {"Driver": "nvidia", "DeviceIDs": ["GPU-aaaa", "GPU-bbbb"], "Capabilities": [["gpu", "compute", "utility"]]}
    ]
    assert "DeviceRequests" not in spec().body()["HostConfig"]
    files = {"lib/libcuda.so.1": "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54", "bin/nvidia-smi": "/usr/bin/nvidia-smi"}
    body = spec(driver_files=files).body()
    binds = body["HostConfig"]["Binds"]
    assert "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54:/usr/local/nvidia/lib/libcuda.so.1:ro" in binds
    assert "/usr/bin/nvidia-smi:/usr/local/nvidia/bin/nvidia-smi:ro" in body["HostConfig"]["Binds"]
    env = dict(item.split("=", 1) for item in body["Env"])
    assert env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib" and env["PATH"].endswith(":/usr/local/nvidia/bin")
    assert "LD_LIBRARY_PATH" not in dict(item.split("=", 1) for item in spec().body()["Env"])


async def test_the_backend_picks_the_toolkit_where_the_engine_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bai.agent import gpu
    from bai.agent.backends.docker import backend as docker

    def backend() -> DockerBackend:
        made = DockerBackend(AgentConfig(data_dir=tmp_path, backend="docker"))
        made.gpus = gpu.GpuInventory((gpu.GpuDevice(0, "GPU-aaaa", "H100", 80 * 2**30, 0),), Path("/dev"))
        return made

    monkeypatch.setattr(docker, "driver_files", lambda: {"lib/libcuda.so.1": Path("/lib/libcuda.so.1")})
    monkeypatch.setattr(docker.shutil, "which", lambda name: None)
    with_runtime = backend()
    await with_runtime._gpu_wiring({"Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}})
    assert with_runtime.gpu_toolkit and with_runtime.driver_files == {}
    plain = backend()
    await plain._gpu_wiring({"Runtimes": {"runc": {}}})
    assert not plain.gpu_toolkit and plain.driver_files == {"lib/libcuda.so.1": "/lib/libcuda.so.1"}
    forced = DockerBackend(AgentConfig(data_dir=tmp_path, backend="docker", docker_gpus="binds"))
    forced.gpus = plain.gpus
    await forced._gpu_wiring({"Runtimes": {"nvidia": {}}})
    assert not forced.gpu_toolkit
