"""``bai image build`` and ``bai image register``: kernel images from the catalog, built
with BuildKit (its layer cache makes a rebuild reuse every unchanged step, and the apt
lists and archives live in cache mounts, outside the layers).

An image whose ``bai.catalog-hash`` label matches its recipe is not built again. A build
gets the host's ``/etc/hosts`` entries for the names it reaches (the Debian mirror, PyPI),
so a host that reaches them through its hosts file builds too, and a venv build the host's
CA bundle as a BuildKit secret (read at build time, stored in no layer).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bai.agent.environments.build import BuildReporter
from bai.agent.environments.catalog import Environment
from bai.images.base import ensure_base
from bai.images.docker import BuildProgress, Docker
from bai.images.recipe import (
    L_CATALOG_HASH,
    PIP_CERT_SECRET,
    WHEELS_DIR,
    BaseRecipe,
    ImageRecipe,
    RecipeError,
    final_base,
    image_recipe,
    parse_etc_hosts,
    registered_labels,
    stale_reason,
)

_PYPI_HOSTS = ("pypi.org", "files.pythonhosted.org")


@dataclass(frozen=True)
class ImageResult:
    ref: str
    environment: str
    #: "up to date" or "built (N of M steps cached)"
    action: str


def _pinned_hosts(names: Iterable[str], hosts_file: Path = Path("/etc/hosts")) -> dict[str, str]:
    try:
        known = parse_etc_hosts(hosts_file.read_text())
    except OSError:
        return {}
    return {name: known[name] for name in names if name in known}


WHEEL_SUFFIXES = (".whl", ".tar.gz", ".zip")


def local_wheel_dirs(environ: Mapping[str, str] = os.environ, pip_config: str | None = None) -> list[Path]:
    """The dirs of local packages the host's pip finds (its ``find-links`` that are dirs):
    ``BAI_IMAGE_WHEELS`` (``:``-separated) when set, else ``PIP_FIND_LINKS`` and pip's
    configuration (``pip config list``)."""
    if environ.get("BAI_IMAGE_WHEELS"):
        return [Path(part) for part in environ["BAI_IMAGE_WHEELS"].split(os.pathsep) if part]
    links = environ.get("PIP_FIND_LINKS", "").split()
    if pip_config is None:
        pip_config = _pip_config()
    for line in pip_config.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().endswith(".find-links"):
            links += value.strip().strip("'\"").split()
    found: list[Path] = []
    for link in links:
        path = Path(link.removeprefix("file://"))
        if "://" not in link.removeprefix("file://") and path.is_absolute() and path.is_dir() and path not in found:
            found.append(path)
    return found


def _pip_config() -> str:
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout


def _gather_wheels(target: Path, sources: Iterable[Path]) -> list[str]:
    """Link (else copy) the package files of ``sources`` into ``target``; their names."""
    target.mkdir()
    names = []
    for source in sources:
        for entry in sorted(source.iterdir()):
            if not entry.is_file() or not entry.name.endswith(WHEEL_SUFFIXES) or (target / entry.name).exists():
                continue
            try:
                os.link(entry, target / entry.name)
            except OSError:
                shutil.copyfile(entry, target / entry.name)
            names.append(entry.name)
    return names


def _context_parent() -> str | None:
    """Where a build's context dir goes: beside the wheels, so that they are linked, not copied."""
    for candidate in ("/var/tmp", tempfile.gettempdir()):
        if os.access(candidate, os.W_OK):
            return candidate
    return None


def _pip_cert() -> Path | None:
    for candidate in (os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _run_build(
    docker: Docker,
    dockerfile: str,
    ref: str,
    reporter: BuildReporter,
    *,
    hosts: Mapping[str, str],
    secrets: Mapping[str, Path],
    labels: Mapping[str, str] | None = None,
    context: Path | None = None,
) -> BuildProgress:
    progress = BuildProgress()

    def show(line: str) -> None:
        shown = progress.feed(line)
        if shown is not None:
            reporter.progress(*shown)

    if context is not None:
        docker.build(dockerfile, ref, context, show, extra_hosts=hosts, secrets=secrets, labels=labels)
        return progress
    with tempfile.TemporaryDirectory(prefix="bai-image-") as empty:
        docker.build(dockerfile, ref, Path(empty), show, extra_hosts=hosts, secrets=secrets, labels=labels)
    return progress


def build_image(
    docker: Docker, recipe: ImageRecipe, base: BaseRecipe, reporter: BuildReporter, force: bool = False
) -> ImageResult:
    """Build one kernel image (its base must be current)."""
    reporter.step(f"{recipe.ref} ({recipe.environment})")
    if not force and stale_reason(docker.labels(recipe.ref), recipe.catalog_hash) is None:
        reporter.progress(1.0, "up to date")
        return ImageResult(recipe.ref, recipe.environment, "up to date")
    hosts = _pinned_hosts(base.hosts() | set(_PYPI_HOSTS))
    cert = _pip_cert()
    venv = "bai.venv" in recipe.labels
    secrets = {PIP_CERT_SECRET: cert} if cert and venv else {}
    with tempfile.TemporaryDirectory(prefix="bai-image-", dir=_context_parent()) as context:
        if venv:  # the host's local wheels, where the venv's pip looks too
            for name in _gather_wheels(Path(context) / WHEELS_DIR, local_wheel_dirs()):
                reporter.progress(0.0, f"local wheel {name}")
        progress = _run_build(
            docker, recipe.dockerfile(), recipe.ref, reporter, hosts=hosts, secrets=secrets, context=Path(context)
        )
    reporter.progress(1.0, "done")
    cached = f"{len(progress.cached)} of {progress.steps} steps cached"
    return ImageResult(recipe.ref, recipe.environment, f"built ({cached})")


def build_images(
    docker: Docker,
    envs: Iterable[Environment],
    base: BaseRecipe,
    cache_dir: Path,
    reporter: BuildReporter,
    *,
    force: bool = False,
    on_result: Callable[[ImageResult], None] = lambda result: None,
) -> list[ImageResult]:
    """The base (when stale), then each environment's image. Recipes are all made first,
    so an entry that cannot be built fails before anything runs."""
    recipes = [image_recipe(env, base) for env in envs]
    base_result = ensure_base(docker, base, cache_dir, reporter)
    results = [ImageResult(base_result.ref, "(base)", base_result.action)]
    on_result(results[0])
    for recipe in recipes:
        results.append(build_image(docker, recipe, base, reporter, force))
        on_result(results[-1])
    return results


def register_image(
    docker: Docker, name: str, tag: str, dockerfile: Path, context: Path, reporter: BuildReporter
) -> ImageResult:
    """Build a user's Dockerfile whose last stage starts from a bai kernel image, labelled as
    environment ``name:tag`` (``bai.based-on`` names the kernel image's environment)."""
    try:
        text = dockerfile.read_text()
    except OSError as exc:
        raise RecipeError(f"{dockerfile}: cannot read: {exc.strerror}") from None
    parent_ref = final_base(text)
    parent = docker.labels(parent_ref)
    if parent is None:
        raise RecipeError(f"{dockerfile}: its base {parent_ref} is not a local image (build it: bai image build)")
    try:
        labels = registered_labels(name, tag, parent, text)
    except RecipeError as exc:
        raise RecipeError(f"{dockerfile}: base {parent_ref}: {exc}") from None
    ref = f"bai/{name}:{tag}"
    reporter.step(f"{ref} (from {parent_ref})")
    if stale_reason(docker.labels(ref), labels[L_CATALOG_HASH]) is None:
        reporter.progress(1.0, "up to date")
        return ImageResult(ref, labels["bai.environment"], "up to date")
    _run_build(docker, text, ref, reporter, hosts={}, secrets={}, labels=labels, context=context)
    reporter.progress(1.0, "done")
    return ImageResult(ref, labels["bai.environment"], "built")
