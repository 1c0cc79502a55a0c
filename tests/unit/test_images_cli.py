"""``bai image`` without a Docker engine: BuildKit progress parsing, the image table against
the catalog, the CLI's refusals, and the docker client wrapper driven through a fake binary."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from bai.agent.environments.catalog import Catalog, load_catalog
from bai.images.cli import image as image_cli
from bai.images.cli import render_rows
from bai.images.docker import BuildProgress, Docker, DockerError, DockerUnavailable, ImageInfo, find_docker
from bai.images.inventory import human_size, image_rows
from bai.images.recipe import L_BASE_HASH, L_BASED_ON, L_CATALOG_HASH, L_ENVIRONMENT, BaseRecipe, image_recipe

BASE = BaseRecipe()

BUILDKIT_OUTPUT = """\
#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 1.20kB done
#1 DONE 0.0s

#4 [1/4] FROM docker.io/bai/base:bookworm
#4 DONE 0.0s

#5 [2/4] RUN --mount=type=cache,id=bai-apt-lists apt-get update -qq
#5 CACHED

#6 [3/4] RUN apt-get install -y r-base-core
#6 0.295 Get:2 http://deb.debian.org/debian bookworm/main amd64 Packages [8790 kB]
#6 DONE 5.6s

#7 [4/4] RUN { command -v R >/dev/null; }
#7 DONE 0.1s

#8 exporting to image
#8 DONE 0.3s
"""


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_build_progress_reads_buildkit_plain_output() -> None:
    progress = BuildProgress()
    shown = [progress.feed(line) for line in BUILDKIT_OUTPUT.splitlines()]
    assert shown[0] == (None, "[internal] load build definition from Dockerfile")
    assert (0.25, "[2/4] RUN --mount=type=cache,id=bai-apt-lists apt-get update -qq") in shown
    assert (0.5, "CACHED") in shown
    assert (0.5, "Get:2 http://deb.debian.org/debian bookworm/main amd64 Packages [8790 kB]") in shown
    assert (1.0, "DONE 0.1s") in shown
    assert progress.steps == 3  # FROM is not a build step
    assert len(progress.cached) == 1
    assert progress.tail[-1] == "#8 DONE 0.3s"


def _info(labels: dict[str, str], tag: str, size: int = 2_500_000) -> ImageInfo:
    return ImageInfo(id=f"sha256:{tag}", tags=(tag,), labels=labels, size=size, created="2026-11-26T16:27:13.1Z")


def test_image_rows_against_the_catalog(catalog: Catalog) -> None:
    current = image_recipe(catalog.resolve("python"), BASE)
    infos = [
        _info({**current.labels}, "bai/python:3.11"),
        _info({L_ENVIRONMENT: "lua:5.4", L_CATALOG_HASH: "0000"}, "bai/lua:5.4"),
        _info({L_ENVIRONMENT: "cobol:85", L_CATALOG_HASH: "0000"}, "bai/cobol:85"),
        _info({L_ENVIRONMENT: "mine:1", L_BASED_ON: "python:3.11", L_CATALOG_HASH: "1"}, "bai/mine:1"),
        _info({L_BASE_HASH: BASE.digest()}, "bai/base:bookworm"),
        _info({L_BASE_HASH: "old"}, "bai/base:old"),
    ]
    rows = {row.image: row for row in image_rows(infos, catalog, BASE)}
    assert list(rows)[:2] == ["bai/base:bookworm", "bai/base:old"]  # the base first
    assert rows["bai/python:3.11"].current and rows["bai/python:3.11"].status == "current"
    assert not rows["bai/lua:5.4"].current and rows["bai/lua:5.4"].status.startswith("stale")
    assert rows["bai/cobol:85"].status == "not in the catalog"
    assert rows["bai/mine:1"].current and "based on python:3.11" in rows["bai/mine:1"].status
    assert rows["bai/base:bookworm"].current and not rows["bai/base:old"].current
    assert rows["bai/python:3.11"].as_json()["environment"] == "python:3.11"


def test_render_rows_table(catalog: Catalog) -> None:
    recipe = image_recipe(catalog.resolve("python"), BASE)
    rows = image_rows([_info(dict(recipe.labels), "bai/python:3.11", 165_700_000)], catalog, BASE)
    out = io.StringIO()
    render_rows(rows, Console(file=out, width=160))
    text = out.getvalue()
    assert text.split()[:6] == ["IMAGE", "ENVIRONMENT", "SIZE", "CREATED", "CURRENT", "STATUS"]
    assert "bai/python:3.11" in text and "165.7 MB" in text and "2026-11-26 16:27:13" in text
    assert "1 image(s); 1 current" in text


def test_human_size() -> None:
    assert human_size(512) == "512 B"
    assert human_size(1_500) == "1.5 kB"
    assert human_size(3_200_000_000) == "3.2 GB"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build"], "name the environments to build"),
        (["build", "python", "--all"], "give environments or --all, not both"),
        (["build", "cobol"], "unknown environment 'cobol'"),
        (["build", "python:9"], "environment 'python' has no tag '9'"),
        (["register", "Bad:1", "--dockerfile", "{df}"], "NAME:TAG"),
        (["register", "mine", "--dockerfile", "{df}"], "NAME:TAG"),
        (["register", "python:mine", "--dockerfile", "{df}"], "'python' is a catalog environment"),
    ],
)
def test_cli_refuses_before_touching_docker(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAI_DOCKER", str(tmp_path / "no-such-docker"))  # any docker use would fail differently
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM bai/python:3.11\n")
    result = CliRunner().invoke(image_cli, [arg.format(df=dockerfile) for arg in args])
    assert result.exit_code != 0
    assert message in result.output
    assert "docker client" not in result.output


def test_cli_without_docker_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAI_DOCKER", str(tmp_path / "no-such-docker"))
    result = CliRunner().invoke(image_cli, ["list"])
    assert result.exit_code == 1
    assert "docker client" in result.output and "not found" in result.output


FAKE_DOCKER = """#!/bin/sh
# a stand-in for the docker client: records its arguments and stdin, prints BuildKit-style lines
printf '%s\\n' "$@" > "$0.args"
case "$1" in
  version) echo "20.10.24" ;;
  build) cat > "$0.stdin"; echo "#5 [2/2] RUN true"; echo "#5 DONE 0.1s"
         [ -z "$FAIL" ] || { echo "#5 ERROR: boom"; exit 1; } ;;
  image) echo "Error: No such image: $3" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fake_docker(tmp_path: Path) -> Path:
    path = tmp_path / "docker"
    path.write_text(FAKE_DOCKER)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_docker_build_streams_lines_and_passes_options(fake_docker: Path, tmp_path: Path) -> None:
    docker = Docker(find_docker(str(fake_docker)))
    lines: list[str] = []
    docker.build(
        "FROM x\n",
        "bai/t:1",
        tmp_path,
        lines.append,
        extra_hosts={"deb.debian.org": "203.0.113.80"},
        secrets={"pip-cert": Path("/etc/ca.crt")},
        labels={"bai.environment": "t:1"},
    )
    assert [line.strip() for line in lines] == ["#5 [2/2] RUN true", "#5 DONE 0.1s"]
    args = (tmp_path / "docker.args").read_text().splitlines()
    assert args[:6] == ["build", "--progress=plain", "--tag", "bai/t:1", "--file", "-"]
    assert "deb.debian.org:203.0.113.80" in args
    assert "id=pip-cert,src=/etc/ca.crt" in args
    assert "bai.environment=t:1" in args
    assert (tmp_path / "docker.stdin").read_text() == "FROM x\n"


def test_docker_build_failure_carries_the_tail(
    fake_docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(DockerError, match=r"(?s)docker build bai/t:1 failed:.*#5 ERROR: boom"):
        Docker(str(fake_docker)).build("FROM x\n", "bai/t:1", tmp_path, lambda line: None)


def test_docker_missing_image_is_none(fake_docker: Path) -> None:
    assert Docker(str(fake_docker)).labels("bai/nothing:1") is None


def test_find_docker_explicit_missing(tmp_path: Path) -> None:
    with pytest.raises(DockerUnavailable, match="not found"):
        find_docker(str(tmp_path / "nope"))


def test_image_info_from_inspect() -> None:
    data = json.loads(
        '{"Id": "sha256:ab", "RepoTags": ["bai/python:3.11"], "Size": 7, "Created": "t",'
        ' "Config": {"Labels": {"bai.environment": "python:3.11"}}}'
    )
    info = ImageInfo.from_inspect(data)
    assert info.tags == ("bai/python:3.11",) and info.size == 7 and info.labels == {"bai.environment": "python:3.11"}
    assert ImageInfo.from_inspect({"Id": "x", "Config": {"Labels": None}}).labels == {}


def test_dockerfile_command_prints_the_recipe(catalog: Catalog) -> None:
    result = CliRunner().invoke(image_cli, ["dockerfile", "lua", "--mirror", "http://deb.debian.org/debian"])
    assert result.exit_code == 0, result.output
    assert result.output == image_recipe(catalog.resolve("lua:5.4"), BASE).dockerfile()
    refused = CliRunner().invoke(image_cli, ["dockerfile", "julia"])
    assert refused.exit_code == 1 and "no install route" in refused.output


def test_all_selects_every_entry_with_an_install_route(catalog: Catalog) -> None:
    from bai.images.cli import _select

    keys = [entry.key for entry in _select(catalog, (), True)]
    assert "julia:1" not in keys
    assert len(keys) == len(catalog) - 1
    assert [entry.key for entry in _select(catalog, ("python", "python:3.11", "r"), False)] == ["python:3.11", "r:4.2"]
