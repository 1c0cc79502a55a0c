"""The operator's ``bai env`` commands on an agent host: ``build`` and the host's own
listing (``bai env list --local``: the catalog with availability here). Registered through
the ``bai.cli`` entry-point group as ``env``; the client's ``bai env`` group, whose ``list``
asks the server (bai.client.cli.environments), borrows these commands from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from bai.agent.config import AgentConfig
from bai.agent.environments.build import BuildError, NeedsRoot, NotInstallable, build_environment
from bai.agent.environments.catalog import Catalog, CatalogError, load_catalog
from bai.agent.environments.host import Status, host_status

CATALOG_OPTION = click.option(
    "--catalog",
    "catalog_path",
    envvar="BAI_AGENT_ENVIRONMENT_CATALOG",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A catalog file instead of the shipped one.",
)
_DATA_DIR = click.option(
    "--base",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where built environments live (under environments/); default: BAI_AGENT_ENVIRONMENTS_BASE, "
    "else /var/lib/bai as root, ~/.local/share/bai otherwise: the place every agent on the host looks.",
)


def open_catalog(path: Path | None) -> Catalog:
    """The catalog (``--catalog`` or the shipped one), or a click error naming what is wrong."""
    try:
        return load_catalog(path)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None


def _data_dir(data_dir: Path | None) -> Path:
    if data_dir:
        return data_dir.expanduser().resolve()
    try:
        return AgentConfig().environments_base
    except ValidationError as exc:
        raise click.ClickException(f"the agent's settings (BAI_AGENT_*) are invalid: {exc}") from None


@click.group("env")
def env() -> None:
    """Environments: which ones this host can run, and building the missing ones."""


def _row(catalog: Catalog, status: Status) -> dict[str, object]:
    entry = status.env
    return {
        "name": entry.name,
        "tag": entry.tag,
        "default": catalog.default_tag(entry.name) == entry.tag,
        "runtime": entry.runtime.value,
        "query_mode": entry.runtime.query_mode,
        "available": status.available,
        "reason": status.reason,
        "debian": list(entry.host.debian),
        "venv": list(entry.host.venv.requirements) if entry.host.venv else None,
        "venv_dir": str(status.venv_dir) if status.venv_dir else None,
        "notes": entry.notes,
    }


@env.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, an object per environment.")
@CATALOG_OPTION
@_DATA_DIR
def list_(as_json: bool, catalog_path: Path | None, data_dir: Path | None) -> None:
    """Every catalog entry with its runtime, query mode and availability on this host
    (``bai env list --local``; without ``--local`` the client asks the server)."""
    catalog = open_catalog(catalog_path)
    statuses = host_status(catalog, _data_dir(data_dir))
    if as_json:
        click.echo(json.dumps([_row(catalog, status) for status in statuses], indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "TAG", "RUNTIME", "QUERY MODE", "AVAILABLE"):
        table.add_column(column, no_wrap=True)
    table.add_column("WHY NOT / HOW", overflow="fold")
    for status in statuses:
        entry = status.env
        tag = f"{entry.tag}*" if catalog.default_tag(entry.name) == entry.tag else entry.tag
        table.add_row(
            entry.name,
            tag,
            entry.runtime.value,
            entry.runtime.query_mode,
            "yes" if status.available else "no",
            status.reason,
        )
    console = Console(width=max(Console().width, 140) if not sys.stdout.isatty() else None)
    console.print(table)
    usable = sum(status.available for status in statuses)
    console.print(f"\n{usable} of {len(statuses)} available; * marks a name's default tag")


class _RichReporter:
    """Draws a build's steps as rich progress bars on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def _finish(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, total=1, completed=1, detail="done")

    def step(self, title: str) -> None:
        self._finish()
        self._task = self._progress.add_task(title, total=None, detail="")

    def progress(self, fraction: float | None, detail: str) -> None:
        if self._task is None:
            self.step("build")
        assert self._task is not None
        if fraction is None:
            self._progress.update(self._task, detail=detail)
        else:
            self._progress.update(self._task, total=1, completed=fraction, detail=detail)

    def close(self) -> None:
        self._finish()


@env.command("build")
@click.argument("reference", metavar="NAME[:TAG]")
@CATALOG_OPTION
@_DATA_DIR
def build(reference: str, catalog_path: Path | None, data_dir: Path | None) -> None:
    """Install what NAME[:TAG] needs: Debian packages (as root) or its virtual environment.
    Running it again with nothing changed does nothing."""
    catalog = open_catalog(catalog_path)
    try:
        entry = catalog.resolve(reference)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    console = Console(stderr=True)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}", style="dim"),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            reporter = _RichReporter(progress)
            result = build_environment(entry, _data_dir(data_dir), reporter)
            reporter.close()
    except NotInstallable as exc:
        raise click.ClickException(str(exc)) from None
    except NeedsRoot as exc:
        raise click.ClickException(f"{entry.key}: {exc}") from None
    except BuildError as exc:
        raise click.ClickException(f"building {entry.key} failed (nothing was kept): {exc}") from None
    click.echo(result.message + (f" ({result.venv_dir})" if result.venv_dir else ""))
