"""``bai admin policy ...``: keypair resource policies (needs an admin keypair).

Every limit option takes a value, or ``none`` for no limit; ``update`` changes only
the options given. Values are checked by the server, whose message names the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bai.client.admin import AdminAPI
from bai.client.cli.admin import call_admin, json_option
from bai.client.cli.context import CliState, pass_state
from bai.client.cli.output import format_bytes, print_json, print_table
from bai.common.wire import ResourcePolicyInfo

NONE_WORDS = ("none", "unlimited")

#: (option, ResourcePolicyFields name, help)
_LIMIT_OPTIONS = (
    ("--max-pids", "max_pids", "Processes a session may hold at once."),
    ("--max-scratch", "max_scratch_bytes", "Size cap of a session's /home/work, e.g. 1g."),
    ("--exec-timeout", "exec_timeout_s", "Wall time per run, seconds."),
    ("--idle-timeout", "idle_timeout_s", "A session unused this long (seconds) ends."),
    ("--max-lifetime", "max_session_lifetime_s", "A session ends this long (seconds) after it started."),
    ("--max-output", "max_output_bytes", "Output kept per run, e.g. 10m."),
)
_SLOT_OPTIONS = (
    ("--session-slot", "max_session_slots", "The most one session may request, SLOT=AMOUNT (cpu=2, mem=4g)."),
    ("--total-slot", "total_resource_slots", "The most a keypair's sessions may hold together, SLOT=AMOUNT."),
)

_COLUMNS = (
    "name",
    "keypairs",
    "session slots",
    "total slots",
    "pids",
    "scratch",
    "exec timeout",
    "idle timeout",
    "lifetime",
    "output",
)


def _limit(value: str | None) -> str | None:
    return None if value is None or value.lower() in NONE_WORDS else value


def _slots(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str] | None:
    """``SLOT=AMOUNT`` options into a mapping; ``none`` alone: no limits. Not given: None."""
    if not values:
        return None
    if len(values) == 1 and values[0].lower() in NONE_WORDS:
        return {}
    slots: dict[str, str] = {}
    for item in values:
        key, sep, amount = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected SLOT=AMOUNT or none, got {item!r}", ctx=ctx, param=param)
        slots[key.strip()] = amount.strip()
    return slots


def _limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option, name, text in reversed(_SLOT_OPTIONS):
        command = click.option(option, name, multiple=True, callback=_slots, metavar="SLOT=AMOUNT", help=text)(command)
    for option, name, text in reversed(_LIMIT_OPTIONS):
        command = click.option(option, name, default=None, metavar="VALUE|none", help=text)(command)
    return command


def _changes(options: dict[str, Any]) -> dict[str, Any]:
    """The options given, as policy fields (``none`` → None: no limit)."""
    changes: dict[str, Any] = {}
    for _, name, _ in _LIMIT_OPTIONS:
        if options.get(name) is not None:
            changes[name] = _limit(options[name])
    for _, name, _ in _SLOT_OPTIONS:
        if options.get(name) is not None:
            changes[name] = options[name]
    return changes


@click.group()
def policy() -> None:
    """List, create, update and delete keypair resource policies."""


@policy.command(name="list")
@json_option
@pass_state
def list_(state: CliState, as_json: bool) -> None:
    """List every resource policy."""
    items = call_admin(state.config, AdminAPI.list_policies)
    if as_json:
        print_json([item.model_dump(mode="json") for item in items])
        return
    print_table(_COLUMNS, (_row(item) for item in items))


@policy.command()
@click.argument("name")
@_limit_options
@json_option
@pass_state
def create(state: CliState, /, name: str, as_json: bool, **options: Any) -> None:
    """Create a resource policy; a limit left out is no limit."""
    changes = _changes(options)
    created = call_admin(state.config, lambda admin_api: admin_api.create_policy(name, **changes))
    _show(created, as_json, "created")


@policy.command()
@click.argument("name")
@_limit_options
@json_option
@pass_state
def update(state: CliState, /, name: str, as_json: bool, **options: Any) -> None:
    """Change the limits given; running sessions keep the limits they started with."""
    changes = _changes(options)
    if not changes:
        raise click.UsageError("nothing to change: give at least one limit option")
    updated = call_admin(state.config, lambda admin_api: admin_api.update_policy(name, **changes))
    _show(updated, as_json, "updated")


@policy.command()
@click.argument("name")
@pass_state
def delete(state: CliState, name: str) -> None:
    """Delete a resource policy no keypair uses."""
    call_admin(state.config, lambda admin_api: admin_api.delete_policy(name))
    click.echo(f"deleted resource policy {name}")


def _show(item: ResourcePolicyInfo, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(item.model_dump(mode="json"))
        return
    print_table(_COLUMNS, [_row(item)], title=f"resource policy {verb}")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"


def _size(value: int | None) -> str:
    return "-" if value is None else format_bytes(value)


def _slot_text(slots: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in slots.items()) or "-"


def _row(item: ResourcePolicyInfo) -> tuple[str, ...]:
    return (
        item.name,
        str(item.num_keypairs),
        _slot_text(item.max_session_slots),
        _slot_text(item.total_resource_slots),
        "-" if item.max_pids is None else str(item.max_pids),
        _size(item.max_scratch_bytes),
        _seconds(item.exec_timeout_s),
        _seconds(item.idle_timeout_s),
        _seconds(item.max_session_lifetime_s),
        _size(item.max_output_bytes),
    )
