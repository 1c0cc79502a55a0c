"""Kernel image recipes from the catalog, with no Docker: the generated Dockerfiles, their
labels, the recipe hashes that decide a rebuild, and the parsers the build relies on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bai.agent.environments.catalog import Catalog, Environment, load_catalog, parse_catalog
from bai.images.recipe import (
    L_BASE_HASH,
    L_CATALOG_HASH,
    L_ENVIRONMENT,
    VENV_PATH,
    WHEELS_MOUNT,
    BaseRecipe,
    RecipeError,
    docker_tag,
    final_base,
    image_recipe,
    image_ref,
    mirror_from_sources,
    parse_etc_hosts,
    registered_labels,
    stale_reason,
)

BASE = BaseRecipe()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _label_block(dockerfile: str) -> dict[str, str]:
    """The LABEL instruction's key="value" pairs, as docker reads them."""
    block = dockerfile.split("LABEL \\\n", 1)[1]
    return dict(re.findall(r'^\s+([\w.-]+)="((?:[^"\\]|\\.)*)"', block, re.M))


def _one(text: str) -> Environment:
    return next(iter(parse_catalog(text)))


LUA = """
[[environment]]
name = "lua"
tag = "5.4"
runtime = "repl"
extension = "lua"
run = "lua5.4 {{src}}"
batch = {{ exec = "lua5.4 main.lua" }}
host = {{ debian = {debian}, binaries = ["lua5.4"] }}
notes = "{notes}"

[environment.repl]
command = ["lua5.4", "-i"]
sentinel = 'print("{{marker}}")'
"""


def test_python_image_is_the_base_plus_the_shared_layer(catalog: Catalog) -> None:
    recipe = image_recipe(catalog.resolve("python"), BASE)
    dockerfile = recipe.dockerfile()
    assert recipe.ref == "bai/python:3.11"
    assert dockerfile.splitlines()[1] == "FROM bai/base:bookworm"
    # python3 is in the layer every image shares: no second apt-get install for it
    assert dockerfile.count("apt-get install") == 1
    assert "useradd --uid 1000 --user-group --create-home --home-dir /home/work" in dockerfile
    assert "USER work\nWORKDIR /home/work\n" in dockerfile
    assert "--mount=type=cache,id=bai-apt-lists,target=/var/lib/apt/lists" in dockerfile


def test_labels_carry_backend_ai_names_and_ours(catalog: Catalog) -> None:
    recipe = image_recipe(catalog.resolve("python"), BASE)
    labels = _label_block(recipe.dockerfile())
    assert labels == dict(recipe.labels)
    assert labels["ai.backend.kernelspec"] == "1"
    assert labels["ai.backend.features"].split() == ["batch", "query", "uid-match", "user-input"]
    assert labels["ai.backend.base-distro"] == "debian12"
    assert labels["ai.backend.runtime-type"] == "python"
    assert labels["ai.backend.runtime-path"] == "/usr/bin/python3"
    assert labels["ai.backend.resource.min.mem"] == "256m"
    assert labels[L_ENVIRONMENT] == "python:3.11"
    assert labels[L_BASE_HASH] == BASE.digest()
    assert re.fullmatch(r"[0-9a-f]{16}", labels[L_CATALOG_HASH])
    assert labels["bai.user"] == "work:1000"


def test_debian_packages_and_binaries_are_installed_and_checked(catalog: Catalog) -> None:
    recipe = image_recipe(catalog.resolve("r"), BASE)
    dockerfile = recipe.dockerfile()
    assert "apt-get install -y -qq --no-install-recommends r-base-core" in dockerfile
    assert 'command -v R >/dev/null || { echo "missing: R"' in dockerfile
    assert "command -v Rscript" in dockerfile
    assert recipe.labels["ai.backend.runtime-type"] == "r"
    assert recipe.labels["ai.backend.runtime-path"] == "/usr/bin/R"
    assert "user-input" not in recipe.labels["ai.backend.features"]


def test_venv_entry_builds_its_venv_at_the_fixed_path(catalog: Catalog) -> None:
    recipe = image_recipe(catalog.resolve("python-tensorflow:2.15"), BASE)
    dockerfile = recipe.dockerfile()
    assert "python3-venv" in dockerfile
    assert f"/usr/bin/python3 -m venv {VENV_PATH}" in dockerfile
    pip = f"{VENV_PATH}/bin/pip install --no-cache-dir --find-links {WHEELS_MOUNT} 'tensorflow-cpu==2.15.*'"
    assert pip in dockerfile
    # the host's CA bundle comes in as a BuildKit secret, stored in no layer
    assert "--mount=type=secret,id=pip-cert" in dockerfile
    assert recipe.labels["ai.backend.runtime-path"] == f"{VENV_PATH}/bin/python"
    assert recipe.labels["bai.venv"] == VENV_PATH
    assert recipe.labels["bai.runner-python"] == f"{VENV_PATH}/bin/python"  # the REPL imports the venv's packages
    assert recipe.labels["ai.backend.resource.min.mem"] == "1g"
    assert f"--mount=type=bind,source=wheels,target={WHEELS_MOUNT}" in dockerfile  # the host's local wheels
    assert f"install --no-cache-dir --find-links {WHEELS_MOUNT}" in dockerfile


def test_every_installable_entry_has_a_recipe_and_julia_is_refused(catalog: Catalog) -> None:
    refs = set()
    for entry in catalog:
        if entry.name == "julia":
            with pytest.raises(RecipeError, match=r"julia:1: no install route"):
                image_recipe(entry, BASE)
            continue
        recipe = image_recipe(entry, BASE)
        refs.add(recipe.ref)
        assert recipe.labels[L_ENVIRONMENT] == entry.key
    assert len(refs) == len(catalog) - 1  # one image per name:tag


def test_catalog_hash_follows_what_is_built_not_the_notes() -> None:
    plain = image_recipe(_one(LUA.format(debian='["lua5.4"]', notes="one")), BASE)
    renoted = image_recipe(_one(LUA.format(debian='["lua5.4"]', notes="two")), BASE)
    more = image_recipe(_one(LUA.format(debian='["lua5.4", "liblua5.4-dev"]', notes="one")), BASE)
    other_base = image_recipe(_one(LUA.format(debian='["lua5.4"]', notes="one")), BaseRecipe(mirror="http://m/debian"))
    assert plain.catalog_hash == renoted.catalog_hash
    assert len({plain.catalog_hash, more.catalog_hash, other_base.catalog_hash}) == 3
    assert plain.catalog_hash == image_recipe(_one(LUA.format(debian='["lua5.4"]', notes="x")), BASE).catalog_hash


def test_stale_reason_decides_a_rebuild() -> None:
    assert stale_reason(None, "abc") == "not built"
    assert "no bai.catalog-hash label" in (stale_reason({}, "abc") or "")
    assert "another recipe" in (stale_reason({L_CATALOG_HASH: "old"}, "abc") or "")
    assert stale_reason({L_CATALOG_HASH: "abc"}, "abc") is None
    assert stale_reason({L_BASE_HASH: "abc"}, "abc", L_BASE_HASH) is None


def test_base_recipe() -> None:
    base = BaseRecipe(mirror="http://mirror.example/debian")
    assert base.ref == "bai/base:bookworm"
    assert base.sources_list().splitlines() == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    ]
    assert base.debootstrap_command("/t") == [
        "debootstrap",
        "--variant=minbase",
        "bookworm",
        "/t",
        "http://mirror.example/debian",
    ]
    assert base.hosts() == {"mirror.example"}
    assert f'LABEL bai.base-hash="{base.digest()}"' in base.import_changes()
    assert base.digest() != BaseRecipe().digest()
    assert base.digest() == BaseRecipe(mirror="http://mirror.example/debian").digest()
    assert BaseRecipe(suite="trixie").distro == "debian13"


def test_docker_tags() -> None:
    assert docker_tag("2.13.0+cpu") == "2.13.0_cpu"
    entry = _one(LUA.format(debian='["lua5.4"]', notes="").replace('tag = "5.4"', 'tag = "5.4+x"'))
    assert image_ref(entry) == "bai/lua:5.4_x"


def test_final_base_follows_named_stages() -> None:
    assert final_base("FROM bai/python:3.11\nRUN true\n") == "bai/python:3.11"
    multi = (
        "FROM debian AS tools\nFROM --platform=linux/amd64 bai/r:4.2 as deps\nRUN x\nFROM deps\nCOPY --from=tools a b\n"
    )
    assert final_base(multi) == "bai/r:4.2"
    with pytest.raises(RecipeError, match="no FROM"):
        final_base("RUN true\n")


def test_registered_labels() -> None:
    parent = {L_ENVIRONMENT: "python:3.11", L_CATALOG_HASH: "p"}
    labels = registered_labels("mine", "1", parent, "FROM bai/python:3.11\n")
    assert labels[L_ENVIRONMENT] == "mine:1"
    assert labels["bai.based-on"] == "python:3.11"
    assert (
        labels[L_CATALOG_HASH]
        != registered_labels("mine", "1", parent, "FROM bai/python:3.11\nRUN x\n")[L_CATALOG_HASH]
    )
    with pytest.raises(RecipeError, match="not a bai kernel image"):
        registered_labels("mine", "1", {L_BASE_HASH: "b"}, "FROM bai/base:bookworm\n")


def test_parse_etc_hosts() -> None:
    text = "127.0.0.1 localhost\n# comment\n203.0.113.80 deb.debian.org pypi.org # proxy\n10.0.0.1 pypi.org\n"
    assert parse_etc_hosts(text) == {
        "localhost": "127.0.0.1",
        "deb.debian.org": "203.0.113.80",
        "pypi.org": "203.0.113.80",
    }


def test_mirror_from_sources() -> None:
    one_line = (
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://ftp.jp.debian.org/debian/ bookworm main\n"
    )
    deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
    assert mirror_from_sources([one_line]) == "http://ftp.jp.debian.org/debian"
    assert mirror_from_sources([deb822, one_line]) == "http://deb.debian.org/debian"
    assert mirror_from_sources(["deb file:/srv/debian bookworm main\n"]) is None


def test_the_hosts_local_wheel_dirs_are_found(tmp_path: Path) -> None:
    from bai.images.build import _gather_wheels, local_wheel_dirs

    wheels, other = tmp_path / "wheels", tmp_path / "more"
    wheels.mkdir()
    other.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl").write_bytes(b"w")
    (wheels / "notes.txt").write_text("not a package")
    (other / "pkg-1.0.tar.gz").write_bytes(b"s")
    missing = tmp_path / "missing"
    config = f"global.find-links='{wheels} https://example.org/simple {missing}'\n:env:.find-links='file://{other}'"
    assert local_wheel_dirs({}, config) == [wheels, other]
    assert local_wheel_dirs({"PIP_FIND_LINKS": str(other)}, "") == [other]
    assert local_wheel_dirs({"BAI_IMAGE_WHEELS": f"{other}:{wheels}"}, config) == [other, wheels]
    (tmp_path / "ctx").mkdir()
    names = _gather_wheels(tmp_path / "ctx" / "wheels", [wheels, other])
    assert names == ["torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl", "pkg-1.0.tar.gz"]
    assert (tmp_path / "ctx" / "wheels" / "pkg-1.0.tar.gz").read_bytes() == b"s"
