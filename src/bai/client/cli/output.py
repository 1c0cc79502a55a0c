"""How the CLI prints: rich tables for people, ``--json`` for programs, one red line for errors.

Listings and details go to stdout; errors, warnings and the run command's
own notes go to stderr, so that stdout carries only what was asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bai.client.models import SessionStats
from bai.common.agent_rpc import RunStats

#: metric → (label, unit) of the usage table (API.md section 5, destroy).
STAT_ROWS: tuple[tuple[str, str, str], ...] = (
    ("cpu_used", "CPU time", "msec"),
    ("mem", "memory peak", "bytes"),
    ("io_read", "IO read", "bytes"),
    ("io_write", "IO written", "bytes"),
    ("net_rx", "network received", "bytes"),
    ("net_tx", "network sent", "bytes"),
    ("io_scratch_size", "scratch size", "bytes"),
)


def print_error(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)


def print_warning(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True)


def print_note(message: str) -> None:
    click.secho(message, dim=True, err=True)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[str]], *, title: str | None = None, stderr: bool = False
) -> None:
    table = Table(title=title, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        table.add_column(column, no_wrap=index == 0)  # the first column names the row: keep it whole
    for row in rows:
        table.add_row(*row)
    _console(stderr).print(table)


def print_fields(fields: Iterable[tuple[str, str]], *, title: str | None = None) -> None:
    table = Table(show_header=False, title=title, title_justify="left", box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for name, value in fields:
        table.add_row(name, value)
    _console(stderr=False).print(table)


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        # Piped or captured: no terminal width to fit, so never wrap or cut a value (keys, ids).
        console.width = 10_000
    return console


def print_stats(name: str, stats: SessionStats, *, stderr: bool = False) -> None:
    print_table(("usage", "value"), stats_rows(stats), title=f"{name} ({stats.status})", stderr=stderr)


def stats_rows(stats: SessionStats) -> list[tuple[str, str]]:
    rows = []
    for metric, label, unit in STAT_ROWS:
        peak = stats.number(metric, "stats_max") if metric == "mem" else None
        value = peak if peak is not None else stats.number(metric)
        if value is not None:
            rows.append((label, format_msec(value) if unit == "msec" else format_bytes(value)))
    return rows


def format_run_stats(stats: RunStats) -> str:
    """One line for ``bai run --stats``: what the run used."""
    scope = "" if stats.mem_peak_scope == "run" else " (the session's so far)"
    line = (
        f"run: cpu {stats.cpu_ms:.0f} ms, memory peak {stats.mem_peak / 2**20:.1f} MiB{scope}, "
        f"wall {stats.wall_ms:.0f} ms"
    )
    if stats.output_truncated:
        line += f", output truncated ({format_bytes(stats.output_bytes)} written)"
    return line


def format_bytes(value: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    amount, index = float(value), 0
    while abs(amount) >= 1024 and index < len(units) - 1:
        amount /= 1024
        index += 1
    return f"{amount:.0f} B" if index == 0 else f"{amount:.1f} {units[index]}"


def format_msec(value: float) -> str:
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def format_age(milliseconds: float) -> str:
    seconds = int(milliseconds // 1000)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"
