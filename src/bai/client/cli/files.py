"""Session file commands: ``bai upload``, ``bai download``, ``bai ls``.

A thin layer over ``AsyncComputeSession.upload`` / ``download`` / ``list_files``
(bai.client.compute). Transfers bigger than PROGRESS_FROM bytes show a rich
progress bar on stderr when it is a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from bai.client.cli.context import CliState, pass_state
from bai.client.cli.output import format_bytes, print_json, print_note, print_table, print_warning
from bai.client.config import APIConfig
from bai.client.files import Extracted, local_size
from bai.client.files import Progress as ProgressCallback
from bai.client.models import FileList
from bai.client.session import AsyncSession

PROGRESS_FROM = 4 * 2**20


@contextlib.contextmanager
def progress_bar(label: str, total: int | None, show: bool) -> Iterator[ProgressCallback | None]:
    """A callback advancing a progress bar on stderr, or None when none is shown."""
    console = Console(stderr=True)
    if not show or not console.is_terminal:
        yield None
        return
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda size: bar.advance(task, size)


@click.command()
@click.argument("session")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--basedir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Paths in /home/work are relative to this directory (default: the current one).")  # fmt: skip
@pass_state
def upload(state: CliState, session: str, files: tuple[str, ...], basedir: str | None) -> None:
    """Upload FILES into SESSION's /home/work, keeping their paths relative to --basedir."""
    total = local_size(files)
    try:
        with progress_bar("uploading", total, total > PROGRESS_FROM) as progress:
            sent = asyncio.run(_upload(state.config, session, list(files), basedir, progress))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for path in sent:
        click.echo(f"/home/work/{path}")
    print_note(f"uploaded {len(sent)} file(s), {format_bytes(total)}")


@click.command()
@click.argument("session")
@click.argument("files", nargs=-1, required=True)
@click.option("--dest", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where to put what is downloaded.")  # fmt: skip
@click.option("--progress/--no-progress", "show", default=True, help="A progress bar on a terminal.")
@pass_state
def download(state: CliState, session: str, files: tuple[str, ...], dest: str, show: bool) -> None:
    """Download FILES (files or directories below /home/work) from SESSION into --dest.

    Each arrives as a tar; members that would land outside --dest (absolute paths,
    '..', links pointing out), devices and fifos are skipped with a warning."""
    with progress_bar("downloading", None, show) as progress:
        result = asyncio.run(_download(state.config, session, list(files), Path(dest), progress))
    for name in result.files:
        click.echo(name)
    for skipped in result.skipped:
        print_warning(f"skipped {skipped}")


@click.command(name="ls")
@click.argument("session")
@click.argument("path", default=".")
@click.option("--json", "as_json", is_flag=True, help="Print JSON and nothing else.")
@pass_state
def ls(state: CliState, session: str, path: str, as_json: bool) -> None:
    """List a directory of SESSION's /home/work (links are shown, not followed)."""
    listing = asyncio.run(_list(state.config, session, path))
    if as_json:
        print_json(listing.model_dump(mode="json"))
        return
    rows = (
        (
            entry.filename + ("/" if entry.type == "dir" else ""),
            entry.mode,
            format_bytes(entry.size),
            datetime.fromtimestamp(entry.mtime).strftime("%Y-%m-%d %H:%M:%S"),
        )
        for entry in listing.files
    )
    print_table(("name", "mode", "size", "modified"), rows, title=listing.folder_path or None)
    if listing.truncated:
        print_warning("the listing was cut at the server's limit")


COMMANDS = (upload, download, ls)


async def _upload(config: APIConfig, session: str, files: list[str], basedir: str | None,
                  progress: ProgressCallback | None) -> list[str]:  # fmt: skip
    async with AsyncSession(config) as api:
        return await api.ComputeSession(session).upload(files, basedir, progress=progress)


async def _download(config: APIConfig, session: str, files: list[str], dest: Path,
                    progress: ProgressCallback | None) -> Extracted:  # fmt: skip
    async with AsyncSession(config) as api:
        return await api.ComputeSession(session).download(files, dest, progress=progress)


async def _list(config: APIConfig, session: str, path: str) -> FileList:
    async with AsyncSession(config) as api:
        return await api.ComputeSession(session).list_files(path)
