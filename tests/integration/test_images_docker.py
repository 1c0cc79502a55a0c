"""Kernel images on a real Docker engine: the debootstrap base and the python image built
(or found current), run with ``docker run``, rebuilt as a no-op, listed, a user's Dockerfile
registered, and a broken entry refused by the build's binary check. Skipped, with the
reason, where no Docker engine answers (or the base is missing and debootstrap needs root).
Fast when ``.ci/run`` (or an earlier run) has built the base and the python image."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bai.agent.environments.catalog import load_catalog, parse_catalog
from bai.images.base import default_cache_dir
from bai.images.build import build_images
from bai.images.cli import host_mirror
from bai.images.cli import image as image_cli
from bai.images.docker import Docker, DockerError, find_docker
from bai.images.recipe import L_BASE_HASH, BaseRecipe, image_recipe
from tests.capabilities import needs

BASE = BaseRecipe(mirror=host_mirror())


def _docker() -> tuple[Docker | None, str | None]:
    try:
        docker = Docker(find_docker(os.environ.get("BAI_DOCKER")))
        docker.ping()
    except DockerError as exc:
        return None, f"no usable Docker engine: {exc}"
    if os.geteuid() != 0 and (docker.labels(BASE.ref) or {}).get(L_BASE_HASH) != BASE.digest():
        return None, f"{BASE.ref} is not built and debootstrap needs root (run: sudo bai image build python)"
    return docker, None


DOCKER, REASON = _docker()
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), needs("docker", REASON)]


class Recorder:
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.details: list[str] = []

    def step(self, title: str) -> None:
        self.steps.append(title)

    def progress(self, fraction: float | None, detail: str) -> None:
        self.details.append(detail)


@pytest.fixture(scope="module")
def docker() -> Docker:
    assert DOCKER is not None
    return DOCKER


@pytest.fixture(scope="module")
def python_image(docker: Docker) -> str:
    env = load_catalog().resolve("python")
    results = build_images(docker, [env], BASE, default_cache_dir(), Recorder())
    assert [result.ref for result in results] == [BASE.ref, "bai/python:3.11"]
    assert results[0].action in {"up to date", "imported from the cache", "built"}
    return results[1].ref


def _run(image: str, *command: str) -> str:
    assert DOCKER is not None
    result = subprocess.run(
        [DOCKER.binary, "run", "--rm", "--network", "none", image, *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip()


def test_python_image_runs_code_as_work(python_image: str) -> None:
    assert _run(python_image, "python3", "-c", "print(1)") == "1"
    assert _run(python_image, "sh", "-c", "id -u; id -un; pwd; echo $HOME") == "1000\nwork\n/home/work\n/home/work"


def test_labels_match_the_recipe(python_image: str, docker: Docker) -> None:
    labels = docker.labels(python_image)
    assert labels is not None
    expected = image_recipe(load_catalog().resolve("python"), BASE).labels
    assert {key: labels.get(key) for key in expected} == dict(expected)


def test_rebuild_is_a_no_op(python_image: str, docker: Docker) -> None:
    recorder = Recorder()
    started = time.monotonic()
    results = build_images(docker, [load_catalog().resolve("python")], BASE, default_cache_dir(), recorder)
    assert [result.action for result in results] == ["up to date", "up to date"]
    assert time.monotonic() - started < 20


def test_forced_rebuild_reuses_every_layer(python_image: str, docker: Docker) -> None:
    before = docker.inspect([python_image])[0].id
    results = build_images(
        docker, [load_catalog().resolve("python")], BASE, default_cache_dir(), Recorder(), force=True
    )
    assert results[1].action == "built (3 of 3 steps cached)"
    assert docker.inspect([python_image])[0].id == before


def test_list_shows_the_images(python_image: str) -> None:
    result = CliRunner().invoke(image_cli, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["image"]: row for row in json.loads(result.output)}
    assert rows[BASE.ref]["environment"] == "(base)" and rows[BASE.ref]["current"]
    assert rows[python_image]["environment"] == "python:3.11" and rows[python_image]["current"]
    assert rows[python_image]["size"] > 50_000_000


def test_missing_binary_fails_the_build(python_image: str, docker: Docker) -> None:
    text = """
[[environment]]
name = "broken"
tag = "1"
runtime = "compiled"
extension = "x"
compile = "nosuchcc -o {out} {src}"
run = "./{out}"
batch = { exec = "./main" }
host = { debian = ["bash"], binaries = ["nosuchcc"] }
"""
    with pytest.raises(DockerError, match="missing: nosuchcc"):
        build_images(docker, list(parse_catalog(text)), BASE, default_cache_dir(), Recorder())
    assert docker.labels("bai/broken:1") is None


@pytest.fixture
def registered(docker: Docker) -> Iterator[str]:
    ref = "bai/test-registered:1"
    yield ref
    subprocess.run([docker.binary, "rmi", "--force", ref], capture_output=True, check=False)


def test_register_a_users_dockerfile(python_image: str, registered: str, docker: Docker, tmp_path: Path) -> None:
    (tmp_path / "greeting.txt").write_text("hello from the context\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {python_image}\nCOPY greeting.txt /home/work/greeting.txt\n")
    result = CliRunner().invoke(image_cli, ["register", "test-registered:1", "--dockerfile", str(dockerfile)])
    assert result.exit_code == 0, result.output
    assert _run(registered, "cat", "/home/work/greeting.txt") == "hello from the context"
    labels = docker.labels(registered) or {}
    assert labels["bai.environment"] == "test-registered:1"
    assert labels["bai.based-on"] == "python:3.11"
    assert labels["ai.backend.runtime-path"] == "/usr/bin/python3"  # inherited from the kernel image
    again = CliRunner().invoke(image_cli, ["register", "test-registered:1", "--dockerfile", str(dockerfile)])
    assert "up to date" in again.output
    listed = CliRunner().invoke(image_cli, ["list", "--json"])
    row = next(row for row in json.loads(listed.output) if row["image"] == registered)
    assert row["status"] == "registered, based on python:3.11"


def test_register_refuses_a_base_that_is_not_a_kernel_image(python_image: str, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {BASE.ref}\nRUN true\n")
    result = CliRunner().invoke(image_cli, ["register", "test-refused:1", "--dockerfile", str(dockerfile)])
    assert result.exit_code == 1
    assert "not a bai kernel image" in result.output
    dockerfile.write_text("FROM bai/nothing-here:1\n")
    result = CliRunner().invoke(image_cli, ["register", "test-refused:1", "--dockerfile", str(dockerfile)])
    assert "is not a local image" in result.output


TINY_VENV = """
[[environment]]
name = "test-tinyvenv"
tag = "1"
runtime = "python"
interpreter = "{venv}/bin/python"
extension = "py"
run = "{venv}/bin/python {src}"
batch = { exec = "{venv}/bin/python main.py" }
host = { binaries = ["/usr/bin/python3"], venv = { python = "/usr/bin/python3", requirements = ["six==1.16.0"] } }
"""


@pytest.fixture
def venv_image(docker: Docker) -> Iterator[str]:
    ref = "bai/test-tinyvenv:1"
    yield ref
    subprocess.run([docker.binary, "rmi", "--force", ref], capture_output=True, check=False)


def test_venv_entry_gets_its_venv_from_pypi(python_image: str, venv_image: str, docker: Docker) -> None:
    """pip in the build reaches PyPI as the host does (its hosts entries, its CA bundle as a
    secret); the venv is at the fixed path and the CA bundle is in no layer."""
    results = build_images(docker, list(parse_catalog(TINY_VENV)), BASE, default_cache_dir(), Recorder())
    assert results[1].ref == venv_image and results[1].action.startswith("built")
    code = "import six, os; print(six.__version__, os.path.exists('/run/secrets/pip-cert'))"
    assert _run(venv_image, "/opt/bai/venv/bin/python", "-c", code) == "1.16.0 False"
    assert (docker.labels(venv_image) or {})["ai.backend.runtime-path"] == "/opt/bai/venv/bin/python"
