"""Availability on a host, with a fake PATH, a fake package database and a fake data dir;
and the output parsers the build's progress display is made from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bai.agent.environments.build import AptStatus, PipProgress, apt_status
from bai.agent.environments.catalog import Environment, load_catalog, parse_catalog
from bai.agent.environments.host import MARKER, HostProbe, host_status, venv_build_dir, venv_link
from tests.capabilities import require_or_skip

CATALOG = """
[[environment]]
name = "lua"
tag = "5.4"
runtime = "script"
extension = "lua"
run = "lua5.4 {src}"
batch = { exec = "lua5.4 main.lua" }
host = { debian = ["lua5.4"], binaries = ["lua5.4"] }

[[environment]]
name = "julia"
tag = "1"
runtime = "script"
extension = "jl"
run = "julia {src}"
batch = { exec = "julia main.jl" }
host = { binaries = ["julia"], unavailable = "no package for it" }

[[environment]]
name = "ml"
tag = "1"
runtime = "python"
interpreter = "{venv}/bin/python"
extension = "py"
run = "{venv}/bin/python {src}"
batch = { exec = "{venv}/bin/python main.py" }
host = { venv = { python = "PYTHON", requirements = ["numpy==2.*"] } }
"""


def _catalog(python: str = sys.executable) -> list[Environment]:
    return list(parse_catalog(CATALOG.replace("PYTHON", python)))


def _fake_bin(directory: Path, *names: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return str(directory)


def _probe(path: str, missing: set[str] | None) -> HostProbe:
    def check(packages: Sequence[str]) -> set[str] | None:
        return None if missing is None else set(packages) & missing

    return HostProbe(path=path, missing_packages=check)


def _fake_venv(data_dir: Path, env: Environment, digest: str | None = None) -> Path:
    assert env.host.venv is not None
    build = venv_build_dir(data_dir, env, env.host.venv)
    (build / "bin").mkdir(parents=True)
    (build / "bin" / "python").symlink_to(sys.executable)
    (build / MARKER).write_text(json.dumps({"digest": digest or env.host.venv.digest()}))
    venv_link(data_dir, env).symlink_to(build.name)
    return build


def test_binaries_and_packages_decide(tmp_path: Path) -> None:
    lua, *_ = _catalog()
    empty = _fake_bin(tmp_path / "empty")
    [status] = host_status([lua], tmp_path, _probe(empty, {"lua5.4"}))
    assert not status.available
    assert "no lua5.4 on PATH" in status.reason and "Debian package lua5.4 not installed" in status.reason
    assert "bai env build lua:5.4" in status.reason

    full = _fake_bin(tmp_path / "full", "lua5.4", "julia")
    [status] = host_status([lua], tmp_path, _probe(full, set()))
    assert status.available and status.reason == ""
    # the binary is there but not from the package (a rustup toolchain under /root): not usable in a sandbox
    [status] = host_status([lua], tmp_path, _probe(full, {"lua5.4"}))
    assert not status.available and "not installed" in status.reason and "on PATH" not in status.reason
    # no dpkg on this host: the binaries decide
    [status] = host_status([lua], tmp_path, _probe(full, None))
    assert status.available


def test_an_environment_without_an_install_route_says_why(tmp_path: Path) -> None:
    _, julia, _ = _catalog()
    [status] = host_status([julia], tmp_path, _probe(_fake_bin(tmp_path / "none"), set()))
    assert not status.available and status.reason == "no julia on PATH: no package for it"
    # an operator who put julia on PATH gets it
    [status] = host_status([julia], tmp_path, _probe(_fake_bin(tmp_path / "bin", "julia"), set()))
    assert status.available


def test_venv_environments_need_a_current_build(tmp_path: Path) -> None:
    *_, ml = _catalog()
    probe = _probe(_fake_bin(tmp_path / "bin"), set())
    [status] = host_status([ml], tmp_path, probe)
    assert not status.available and status.reason == "not built: run `bai env build ml:1`"

    build = _fake_venv(tmp_path, ml)
    [status] = host_status([ml], tmp_path, probe)
    assert status.available and status.venv_dir == build.resolve()


def test_an_out_of_date_or_broken_venv_is_not_used(tmp_path: Path) -> None:
    *_, ml = _catalog()
    probe = _probe(_fake_bin(tmp_path / "bin"), set())
    build = _fake_venv(tmp_path, ml, digest="0123456789abcdef")
    [status] = host_status([ml], tmp_path, probe)
    assert not status.available and "built from another spec (0123456789abcdef)" in status.reason
    (build / MARKER).write_text("{not json")
    [status] = host_status([ml], tmp_path, probe)
    assert not status.available and status.reason.startswith("not built")


def test_a_missing_base_interpreter_is_named(tmp_path: Path) -> None:
    *_, ml = _catalog(python="/nonexistent/python3")
    [status] = host_status([ml], tmp_path, _probe(_fake_bin(tmp_path / "bin"), set()))
    assert not status.available and status.reason == "base interpreter /nonexistent/python3 is missing"


def test_the_real_dpkg_answers_for_this_host(tmp_path: Path) -> None:
    if not Path("/usr/bin/dpkg-query").exists():
        require_or_skip("platform", "no dpkg on this host")
    probe = HostProbe()
    missing = probe.missing_packages(["dpkg", "bai-no-such-package"])
    assert missing == {"bai-no-such-package"}
    python = load_catalog().resolve("python")
    [status] = host_status([python], tmp_path)
    assert status.available, status.reason


def test_pip_progress_summarises_pip_output() -> None:
    progress = PipProgress()
    lines = [
        "Collecting tensorflow-cpu==2.21.*",
        "  Downloading tensorflow_cpu-2.21.0-cp311-cp311-manylinux_2_27_x86_64.whl (252.3 MB)",
        "Collecting numpy>=1.26.0",
        "  Using cached numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl (16.8 MB)",
        "Processing /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
        "Requirement already satisfied: pip in ./lib/python3.11/site-packages",
        "Installing collected packages: numpy, tensorflow-cpu",
        "Successfully installed numpy-2.4.6 tensorflow-cpu-2.21.0",
    ]
    details = [progress.feed(line) for line in lines]
    assert details[0] == "collecting tensorflow-cpu==2.21.* (1 so far, 0.0 MB)"
    assert details[1] is not None and "252.3 MB" in details[1]
    assert details[4] == "using torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert details[5] is None
    assert details[6] == "installing 2 packages (269.1 MB fetched)"
    assert progress.collected == ["tensorflow-cpu==2.21.*", "numpy>=1.26.0"]
    assert progress.downloaded == 269_100_000
    assert progress.installed == ["numpy-2.4.6", "tensorflow-cpu-2.21.0"]


def test_apt_status_lines() -> None:
    assert apt_status("pmstatus:lua5.4:50:Unpacking lua5.4 (amd64)") == AptStatus(
        "install", 0.5, "Unpacking lua5.4 (amd64)"
    )
    assert apt_status("dlstatus:1:12.5:Retrieving file 1 of 3") == AptStatus(
        "download", 0.125, "Retrieving file 1 of 3"
    )
    assert apt_status("pmstatus:x:250:too far") == AptStatus("install", 1.0, "too far")
    assert apt_status("Reading package lists...") is None
    assert apt_status("pmstatus:x:nan%:?") is None


def test_bai_env_list_through_the_entry_point(tmp_path: Path) -> None:
    bai = Path(sys.executable).with_name("bai")
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG.replace("PYTHON", sys.executable))
    env = {**os.environ, "BAI_AGENT_ENVIRONMENT_CATALOG": str(catalog)}
    result = subprocess.run(
        [str(bai), "env", "list", "--local", "--json", "--base", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"lua", "julia", "ml"}
    assert rows["ml"]["available"] is False and rows["ml"]["venv"] == ["numpy==2.*"]
    assert rows["julia"]["query_mode"] == "run-each" and rows["julia"]["default"] is True
    table = subprocess.run(
        [str(bai), "env", "list", "--local", "--base", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert table.returncode == 0 and "not built: run `bai env build ml:1`" in table.stdout
    assert "of 3 available" in table.stdout
