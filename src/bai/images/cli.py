"""``bai image``: kernel images for the docker backend, built on this machine from the
environment catalog (build, list, register a user's Dockerfile). Registered on the CLI
through the ``bai.cli`` entry-point group."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from bai.agent.environments.catalog import Catalog, CatalogError, Environment
from bai.agent.environments.cli import CATALOG_OPTION as _CATALOG
from bai.agent.environments.cli import open_catalog as _catalog
from bai.images.base import default_cache_dir
from bai.images.build import ImageResult, build_images, register_image
from bai.images.docker import Docker, DockerError, find_docker
from bai.images.inventory import ImageRow, human_size, image_rows
from bai.images.recipe import (
    DEFAULT_MIRROR,
    L_BASE_HASH,
    L_ENVIRONMENT,
    BaseRecipe,
    RecipeError,
    image_recipe,
    installable,
    mirror_from_sources,
)

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")

_MIRROR = click.option(
    "--mirror",
    envvar="BAI_DEBIAN_MIRROR",
    default=None,
    help="The Debian mirror for debootstrap and apt (default: the host's apt sources, else deb.debian.org).",
)
_SUITE = click.option("--suite", default="bookworm", show_default=True, help="The Debian suite of the base.")


def host_mirror() -> str:
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    return mirror_from_sources(texts) or DEFAULT_MIRROR


def _base(suite: str, mirror: str | None) -> BaseRecipe:
    return BaseRecipe(suite=suite, mirror=(mirror or host_mirror()).rstrip("/"))


def _docker() -> Docker:
    try:
        docker = Docker(find_docker(os.environ.get("BAI_DOCKER")))
        docker.ping()
    except DockerError as exc:
        raise click.ClickException(str(exc)) from None
    return docker


class _RichReporter:
    """Each build step as a rich progress bar on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def step(self, title: str) -> None:
        if self._task is not None and self._progress.tasks[-1].total is None:
            self._progress.update(self._task, total=1, completed=1)  # a step without a fraction ends
        self._task = self._progress.add_task(title, total=None, detail="")

    def progress(self, fraction: float | None, detail: str) -> None:
        if self._task is None:
            self.step("build")
        assert self._task is not None
        if fraction is None:
            self._progress.update(self._task, detail=detail)
        else:
            self._progress.update(self._task, total=1, completed=fraction, detail=detail)


@contextmanager
def _reporter() -> Iterator[_RichReporter]:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}", style="dim"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield _RichReporter(progress)


@click.group("image")
def image() -> None:
    """Kernel images for the docker backend, built here from the environment catalog."""


def _installable(entry: Environment) -> bool:
    try:
        installable(entry)
    except RecipeError:
        return False
    return True


def _select(catalog: Catalog, references: tuple[str, ...], every: bool) -> list[Environment]:
    if every and references:
        raise click.UsageError("give environments or --all, not both")
    if every:
        return [entry for entry in catalog if _installable(entry)]
    if not references:
        raise click.UsageError("name the environments to build (NAME or NAME:TAG), or --all")
    try:
        return list({entry.key: entry for entry in map(catalog.resolve, references)}.values())
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None


@image.command("build")
@click.argument("references", nargs=-1, metavar="[NAME[:TAG]]...")
@click.option("--all", "every", is_flag=True, help="Every catalog entry that has an install route.")
@click.option("--force", is_flag=True, help="Build even where the image is current (BuildKit's cache still holds).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the debootstrap tarball is kept (default: BAI_IMAGE_CACHE_DIR, /var/cache/bai/images as root).",
)
@_CATALOG
@_MIRROR
@_SUITE
def build(
    references: tuple[str, ...],
    every: bool,
    force: bool,
    cache_dir: Path | None,
    catalog_path: Path | None,
    mirror: str | None,
    suite: str,
) -> None:
    """Build the base image (when it is missing or stale) and the named environments' images.
    An image that matches the catalog is left as it is."""
    envs = _select(_catalog(catalog_path), references, every)
    docker = _docker()
    results: list[ImageResult] = []
    try:
        with _reporter() as reporter:
            build_images(
                docker,
                envs,
                _base(suite, mirror),
                (cache_dir or default_cache_dir()).resolve(),
                reporter,
                force=force,
                on_result=results.append,
            )
    except (DockerError, RecipeError) as exc:
        raise click.ClickException(str(exc)) from None
    for result in results:
        click.echo(f"{result.ref:32} {result.environment:28} {result.action}")


def render_rows(rows: list[ImageRow], console: Console) -> None:
    table = Table(box=None, pad_edge=False)
    for column in ("IMAGE", "ENVIRONMENT", "SIZE", "CREATED", "CURRENT"):
        table.add_column(column, no_wrap=True)
    table.add_column("STATUS", overflow="fold")
    for row in rows:
        created = row.created[:19].replace("T", " ")
        current = "yes" if row.current else "no"
        table.add_row(row.image, row.environment, human_size(row.size), created, current, row.status)
    console.print(table)
    console.print(f"\n{len(rows)} image(s); {sum(row.current for row in rows)} current")


@image.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, an object per image.")
@_CATALOG
@_MIRROR
@_SUITE
def list_(as_json: bool, catalog_path: Path | None, mirror: str | None, suite: str) -> None:
    """The bai images on this machine, and whether each is what the current catalog builds."""
    catalog = _catalog(catalog_path)
    docker = _docker()
    try:
        infos = {info.id: info for label in (L_ENVIRONMENT, L_BASE_HASH) for info in docker.images(label)}
    except DockerError as exc:
        raise click.ClickException(str(exc)) from None
    rows = image_rows(infos.values(), catalog, _base(suite, mirror))
    if as_json:
        click.echo(json.dumps([row.as_json() for row in rows], indent=2))
        return
    render_rows(rows, Console(width=max(Console().width, 140) if not sys.stdout.isatty() else None))


@image.command("register")
@click.argument("reference", metavar="NAME:TAG")
@click.option(
    "--dockerfile",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="A Dockerfile whose last stage starts FROM a bai kernel image.",
)
@click.option(
    "--context",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The build context (default: the Dockerfile's dir).",
)
@_CATALOG
def register(reference: str, dockerfile: Path, context: Path | None, catalog_path: Path | None) -> None:
    """Build a Dockerfile based on one of our images as environment NAME:TAG (bai/NAME:TAG);
    it runs like the environment it is based on."""
    name, _, tag = reference.partition(":")
    if not _NAME.match(name) or not _TAG.match(tag):
        raise click.BadParameter(
            "NAME:TAG with a lowercase name (letters, digits, -) and a tag (letters, digits, . _ -)",
            param_hint="NAME:TAG",
        )
    if name in _catalog(catalog_path).names:
        raise click.BadParameter(f"{name!r} is a catalog environment; choose another name", param_hint="NAME:TAG")
    docker = _docker()
    try:
        with _reporter() as reporter:
            result = register_image(docker, name, tag, dockerfile, context or dockerfile.parent, reporter)
    except (DockerError, RecipeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{result.ref} {result.environment}: {result.action}")


@image.command("dockerfile")
@click.argument("reference", metavar="NAME[:TAG]")
@_CATALOG
@_MIRROR
@_SUITE
def dockerfile(reference: str, catalog_path: Path | None, mirror: str | None, suite: str) -> None:
    """Print the Dockerfile `bai image build` generates for NAME[:TAG] (no Docker needed)."""
    try:
        entry = _catalog(catalog_path).resolve(reference)
        click.echo(image_recipe(entry, _base(suite, mirror)).dockerfile(), nl=False)
    except (CatalogError, RecipeError) as exc:
        raise click.ClickException(str(exc)) from None
