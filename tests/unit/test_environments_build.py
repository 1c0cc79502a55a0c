"""``bai env build`` on real virtual environments (Debian's python3 -m venv, real pip):
a build, the no-op rebuild, a failed or interrupted build that keeps nothing, and the
Debian route's refusal when not root."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from bai.agent.environments.build import (
    BuildError,
    NeedsRoot,
    NotInstallable,
    build_environment,
)
from bai.agent.environments.catalog import Environment, parse_catalog
from bai.agent.environments.cli import env as env_cli
from bai.agent.environments.host import MARKER, HostProbe, host_status, read_marker, venv_link

BASE_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

TEMPLATE = """
[[environment]]
name = "tiny"
tag = "1"
runtime = "python"
interpreter = "{{venv}}/bin/python"
extension = "py"
run = "{{venv}}/bin/python {{src}}"
batch = {{ exec = "{{venv}}/bin/python main.py" }}
host = {{ venv = {{ python = "{python}", requirements = {requirements}, pip_args = {pip_args} }} }}

[[environment]]
name = "lua"
tag = "5.4"
runtime = "script"
extension = "lua"
run = "lua5.4 {{src}}"
batch = {{ exec = "lua5.4 main.lua" }}
host = {{ debian = ["lua5.4"], binaries = ["bai-test-no-such-binary"] }}

[[environment]]
name = "julia"
tag = "1"
runtime = "script"
extension = "jl"
run = "julia {{src}}"
batch = {{ exec = "julia main.jl" }}
host = {{ binaries = ["bai-test-no-such-julia"], unavailable = "no package for it" }}
"""


def _catalog_text(requirements: Sequence[str] = (), pip_args: Sequence[str] = ("--no-index",)) -> str:
    return TEMPLATE.format(
        python=BASE_PYTHON, requirements=json.dumps(list(requirements)), pip_args=json.dumps(list(pip_args))
    )


def _tiny(requirements: Sequence[str] = (), pip_args: Sequence[str] = ("--no-index",)) -> Environment:
    return parse_catalog(_catalog_text(requirements, pip_args)).resolve("tiny")


class Recorder:
    def __init__(self, interrupt_at: str | None = None) -> None:
        self.steps: list[str] = []
        self.details: list[str] = []
        self._interrupt_at = interrupt_at

    def step(self, title: str) -> None:
        self.steps.append(title)
        if self._interrupt_at and title.startswith(self._interrupt_at):
            raise KeyboardInterrupt

    def progress(self, fraction: float | None, detail: str) -> None:
        self.details.append(detail)


def _builds(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (data_dir / "environments").iterdir() if not path.name.startswith("."))


@pytest.mark.slow
def test_build_then_a_noop_then_a_failed_rebuild_that_keeps_the_old_one(tmp_path: Path) -> None:
    tiny = _tiny()
    recorder = Recorder()
    result = build_environment(tiny, tmp_path, recorder)
    assert result.changed and result.venv_dir is not None
    link = venv_link(tmp_path, tiny)
    assert link.is_symlink() and link.resolve() == result.venv_dir
    marker = read_marker(link)
    assert marker is not None and marker["digest"] == tiny.host.venv.digest()  # type: ignore[union-attr]
    python = link / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    assert out == str(link) or Path(out).resolve() == result.venv_dir
    assert recorder.steps == [f"python -m venv ({BASE_PYTHON})"]  # no requirements: no pip step
    [status] = host_status([tiny], tmp_path, HostProbe())
    assert status.available, status.reason

    again = build_environment(tiny, tmp_path, Recorder())
    assert not again.changed and "nothing to do" in again.message

    broken = _tiny(requirements=["bai-no-such-package-anywhere==1.0"])
    recorder = Recorder()
    with pytest.raises(BuildError, match=r"pip install.*exited with 1") as caught:
        build_environment(broken, tmp_path, recorder)
    assert "bai-no-such-package-anywhere" in str(caught.value)  # pip's own last lines
    assert recorder.steps[-1] == "pip install bai-no-such-package-anywhere==1.0"
    assert _builds(tmp_path) == [link.name, result.venv_dir.name]  # nothing half-built kept
    assert link.resolve() == result.venv_dir
    [status] = host_status([broken], tmp_path, HostProbe())
    assert not status.available and "built from another spec" in status.reason


def test_an_interrupted_build_keeps_nothing(tmp_path: Path) -> None:
    tiny = _tiny(requirements=["pip"])
    with pytest.raises(KeyboardInterrupt):
        build_environment(tiny, tmp_path, Recorder(interrupt_at="pip install"))
    assert _builds(tmp_path) == []
    assert not venv_link(tmp_path, tiny).exists()


@pytest.mark.slow
def test_a_new_spec_replaces_the_old_build(tmp_path: Path) -> None:
    first = build_environment(_tiny(), tmp_path, Recorder())
    second_env = _tiny(pip_args=["--no-index", "--no-compile"])
    second = build_environment(second_env, tmp_path, Recorder())
    assert second.changed and second.venv_dir != first.venv_dir
    link = venv_link(tmp_path, second_env)
    assert _builds(tmp_path) == sorted([link.name, second.venv_dir.name])  # type: ignore[union-attr]
    assert not (first.venv_dir or Path("/nonexistent")).exists()


@pytest.mark.slow
def test_a_venv_with_a_real_package_from_the_index(tmp_path: Path) -> None:
    tiny = _tiny(requirements=["six"], pip_args=[])
    recorder = Recorder()
    result = build_environment(tiny, tmp_path, recorder)
    assert result.changed
    assert any(detail.startswith("installed 1 packages") for detail in recorder.details)
    marker = json.loads((venv_link(tmp_path, tiny) / MARKER).read_text())
    assert [name.split("-")[0] for name in marker["installed"]] == ["six"]
    python = venv_link(tmp_path, tiny) / "bin" / "python"
    subprocess.run([str(python), "-c", "import six"], check=True, timeout=30)


def test_debian_packages_need_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lua = parse_catalog(_catalog_text()).resolve("lua")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    probe = HostProbe(missing_packages=set)
    with pytest.raises(NeedsRoot) as caught:
        build_environment(lua, tmp_path, Recorder(), probe)
    assert caught.value.command == ["apt-get", "install", "-y", "--no-install-recommends", "lua5.4"]
    assert "as root, run: apt-get install -y --no-install-recommends lua5.4" in str(caught.value)


def test_installed_packages_are_a_noop(tmp_path: Path) -> None:
    catalog = parse_catalog(_catalog_text())
    lua = catalog.resolve("lua")
    probe = HostProbe(path=str(tmp_path), missing_packages=lambda packages: set())
    (tmp_path / "bai-test-no-such-binary").write_text("#!/bin/sh\n")
    (tmp_path / "bai-test-no-such-binary").chmod(0o755)
    result = build_environment(lua, tmp_path, Recorder(), probe)
    assert not result.changed and result.message == "lua:5.4 is already installed"


def test_no_install_route(tmp_path: Path) -> None:
    julia = parse_catalog(_catalog_text()).resolve("julia")
    with pytest.raises(NotInstallable, match=r"julia:1 cannot be installed here.*: no package for it"):
        build_environment(julia, tmp_path, Recorder())


@pytest.mark.slow
def test_the_cli_builds_and_reports(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(_catalog_text())
    data = tmp_path / "data"
    runner = CliRunner()
    args = ["--catalog", str(catalog), "--base", str(data)]
    first = runner.invoke(env_cli, ["build", "tiny", *args])
    assert first.exit_code == 0, first.output
    assert "built tiny:1" in first.output
    second = runner.invoke(env_cli, ["build", "tiny:1", *args])
    assert second.exit_code == 0 and "already built" in second.output
    unknown = runner.invoke(env_cli, ["build", "tiny:2", *args])
    assert unknown.exit_code == 1 and "environment 'tiny' has no tag '2'" in unknown.output
    julia = runner.invoke(env_cli, ["build", "julia", *args])
    assert julia.exit_code == 1 and "no package for it" in julia.output
    listing = runner.invoke(env_cli, ["list", "--json", *args])
    rows = {row["name"]: row for row in json.loads(listing.output)}
    assert rows["tiny"]["available"] is True and rows["tiny"]["venv_dir"]
    bad = tmp_path / "bad.toml"
    bad.write_text(_catalog_text().replace('extension = "jl"', 'extension = "j l"'))
    refused = runner.invoke(env_cli, ["list", "--catalog", str(bad)])
    assert refused.exit_code == 1 and "(julia:1): field 'extension'" in refused.output
