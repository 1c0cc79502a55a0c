"""Session commands: ``bai ps``, ``info``, ``rm``, ``restart``, ``interrupt``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import click

from bai.client.cli.context import CliState, pass_state
from bai.client.cli.output import (
    format_age,
    format_bytes,
    print_error,
    print_fields,
    print_json,
    print_stats,
    print_table,
)
from bai.client.compute import AsyncComputeSession
from bai.client.config import APIConfig
from bai.client.models import SessionStats
from bai.client.session import AsyncSession
from bai.common.errors import BaiError
from bai.common.wire import SessionInfo

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON and nothing else.")


@click.command()
@click.option("--all", "all_", is_flag=True, help="Every keypair's sessions (admin keypairs only).")
@json_option
@pass_state
def ps(state: CliState, all_: bool, as_json: bool) -> None:
    """List your sessions."""
    items = asyncio.run(_list(state.config, all_))
    if as_json:
        print_json([item.model_dump(mode="json") for item in items])
        return
    print_table(
        ("name", "id", "image", "status", "age", "queries"),
        (
            (s.sessionName, s.sessionId[:8], s.image, s.status, format_age(s.age), str(s.numQueriesExecuted))
            for s in items
        ),
    )


@click.command()
@click.argument("name")
@json_option
@pass_state
def info(state: CliState, name: str, as_json: bool) -> None:
    """Show one session (by name or id)."""
    details = asyncio.run(_info(state.config, name))
    if as_json:
        print_json(details.model_dump(mode="json"))
        return
    print_fields(_info_fields(details), title=details.sessionName)


@click.command()
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@json_option
@pass_state
@click.pass_context
def rm(ctx: click.Context, state: CliState, names: tuple[str, ...], as_json: bool) -> None:
    """Destroy sessions and print their resource usage."""
    results = asyncio.run(_destroy_all(state.config, names))
    destroyed = [(name, outcome) for name, outcome in results if isinstance(outcome, SessionStats)]
    for name, outcome in results:
        if isinstance(outcome, BaiError):
            print_error(f"{name}: {outcome}")
    if as_json:
        print_json([{"name": name, "stats": usage.to_wire()} for name, usage in destroyed])
    else:
        for name, usage in destroyed:
            print_stats(name, usage)
    if len(destroyed) < len(results):
        ctx.exit(1)


@click.command()
@click.argument("name")
@pass_state
def restart(state: CliState, name: str) -> None:
    """Restart a session's runtime.

    Its in-memory state is lost; its files are kept.
    """
    asyncio.run(_act(state.config, name, AsyncComputeSession.restart))
    click.echo(f"restarted {name}")


@click.command()
@click.argument("name")
@pass_state
def interrupt(state: CliState, name: str) -> None:
    """Interrupt the code running in a session."""
    asyncio.run(_act(state.config, name, AsyncComputeSession.interrupt))
    click.echo(f"interrupted {name}")


COMMANDS = (ps, info, rm, restart, interrupt)


async def _list(config: APIConfig, all_: bool) -> list[SessionInfo]:
    async with AsyncSession(config) as api:
        return await api.list_sessions(all_=all_)


async def _info(config: APIConfig, name: str) -> SessionInfo:
    async with AsyncSession(config) as api:
        return await api.ComputeSession(name).info()


async def _destroy_all(config: APIConfig, names: tuple[str, ...]) -> list[tuple[str, SessionStats | BaiError]]:
    results: list[tuple[str, SessionStats | BaiError]] = []
    async with AsyncSession(config) as api:
        for name in names:
            try:
                results.append((name, await api.ComputeSession(name).destroy()))
            except BaiError as exc:
                results.append((name, exc))
    return results


async def _act(config: APIConfig, name: str, action: Callable[[AsyncComputeSession], Awaitable[None]]) -> None:
    async with AsyncSession(config) as api:
        await action(api.ComputeSession(name))


def _info_fields(details: SessionInfo) -> list[tuple[str, str]]:
    slots = ", ".join(
        f"{slot}={format_bytes(float(amount)) if slot == 'mem' else amount}"
        for slot, amount in (details.occupiedSlots or details.requestedSlots).items()
    )
    return [
        ("id", details.sessionId),
        ("image", details.image),
        ("type", details.type),
        ("status", details.status + (f" ({details.statusInfo})" if details.statusInfo else "")),
        ("created", details.creationTime),
        ("age", format_age(details.age)),
        ("agent", details.agent or "-"),
        ("resources", slots or "-"),
        ("queries", str(details.numQueriesExecuted)),
        ("tag", details.tag or "-"),
    ]
