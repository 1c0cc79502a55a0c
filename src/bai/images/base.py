"""The base image: ``debootstrap`` into a temporary dir, packed into a tarball kept in the
cache dir (``base-<suite>-<digest>.tar``), then ``docker import``-ed as ``bai/base:<suite>``.

Each step is skipped when its result is there: an image whose ``bai.base-hash`` label is
the recipe's digest is reused as it is; a cached tarball of that digest is imported without
running debootstrap again (a fresh Docker data dir on the same machine, CI's second run).
The tarball is written under a temporary name and renamed when complete, and a lock on the
cache dir keeps two builds from racing. Debootstrap needs root.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bai.agent.environments.build import BuildReporter
from bai.images.docker import Docker, DockerError
from bai.images.recipe import L_BASE_HASH, BaseRecipe, stale_reason

_DEBOOTSTRAP_STEPS = ("Retrieving", "Validating", "Extracting", "Installing", "Unpacking", "Configuring")


@dataclass(frozen=True)
class BaseResult:
    ref: str
    #: "up to date", "imported from the cache" or "built"
    action: str
    tarball: Path


def default_cache_dir() -> Path:
    """``BAI_IMAGE_CACHE_DIR``, else /var/cache/bai/images as root, else ``$XDG_CACHE_HOME/bai/images``."""
    if os.environ.get("BAI_IMAGE_CACHE_DIR"):
        return Path(os.environ["BAI_IMAGE_CACHE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/cache/bai/images")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bai" / "images"


def tarball_path(cache_dir: Path, recipe: BaseRecipe) -> Path:
    return cache_dir / f"base-{recipe.suite}-{recipe.digest()}.tar"


@contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _debootstrap(recipe: BaseRecipe, target: Path, reporter: BuildReporter) -> None:
    if shutil.which("debootstrap") is None:
        raise DockerError("debootstrap is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise DockerError("debootstrap needs root: run `bai image build` as root to make the base image")
    command = recipe.debootstrap_command(str(target))
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
        assert process.stdout is not None
        for line in process.stdout:
            text = line.strip()
            tail = [*tail[-14:], text]
            if text.startswith("I: ") and text[3:].startswith(_DEBOOTSTRAP_STEPS):
                reporter.progress(None, text[3:][:100])
        returncode = process.wait()
    if returncode != 0:
        raise DockerError("debootstrap failed:\n" + "\n".join(tail))


def _trim(root: Path, recipe: BaseRecipe) -> None:
    """Set the apt sources and drop what a tarball need not carry (package lists, .debs)."""
    (root / "etc/apt/sources.list").write_text(recipe.sources_list())
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"):
        for path in root.glob(pattern):
            if path.is_file():
                path.unlink()


def _make_tarball(recipe: BaseRecipe, tarball: Path, reporter: BuildReporter) -> None:
    reporter.step(f"debootstrap {recipe.variant} {recipe.suite} from {recipe.mirror}")
    work = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=tarball.parent))
    try:
        root = work / "root"
        _debootstrap(recipe, root, reporter)
        _trim(root, recipe)
        reporter.progress(None, f"packing {tarball.name}")
        partial = tarball.with_suffix(".tar.partial")
        result = subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DockerError(f"packing the base failed: {result.stderr.strip()[-1000:]}")
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_base(docker: Docker, recipe: BaseRecipe, cache_dir: Path, reporter: BuildReporter) -> BaseResult:
    """Make ``recipe.ref`` current, doing no more than needed."""
    tarball = tarball_path(cache_dir, recipe)
    with cache_lock(cache_dir):
        reason = stale_reason(docker.labels(recipe.ref), recipe.digest(), L_BASE_HASH)
        if reason is None:
            return BaseResult(recipe.ref, "up to date", tarball)
        action = "imported from the cache"
        if not tarball.is_file():
            _make_tarball(recipe, tarball, reporter)
            action = "built"
        reporter.step(f"import {recipe.ref}")
        reporter.progress(None, f"docker import {tarball.name}")
        docker.import_tarball(tarball, recipe.ref, recipe.import_changes())
        return BaseResult(recipe.ref, action, tarball)
