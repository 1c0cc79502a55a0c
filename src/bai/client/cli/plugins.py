"""Commands from other packages, through the entry-point group ``bai.cli``: found by
name, imported only when run or asked for help, skipped with a warning when they fail to
import. Callers: the root group (bai.client.cli.main) and ``bai env`` (which borrows the
agent's operator commands)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points

import click

from bai.client.cli.output import print_warning

ENTRY_POINT_GROUP = "bai.cli"

EntryPointSource = Callable[[], Iterable[EntryPoint]]


def installed_entry_points() -> Iterable[EntryPoint]:
    return entry_points(group=ENTRY_POINT_GROUP)


def load_command(point: EntryPoint) -> click.Command | None:
    try:
        command = point.load()
    except Exception as exc:
        print_warning(f"skipping the command {point.name!r} ({point.value}): {type(exc).__name__}: {exc}")
        return None
    if not isinstance(command, click.Command):
        print_warning(f"skipping the command {point.name!r} ({point.value}): not a click command")
        return None
    return command
