"""``bai admin agent list``: the compute nodes, their capacity, load and warm pool."""

from __future__ import annotations

from decimal import Decimal

import click

from bai.client.admin import AdminAPI
from bai.client.cli.admin import call_admin, json_option
from bai.client.cli.context import CliState, pass_state
from bai.client.cli.output import print_json, print_table
from bai.common.wire import AgentStatus


@click.group()
def agent() -> None:
    """The agents (compute nodes) the manager knows."""


@agent.command(name="list")
@json_option
@pass_state
def list_(state: CliState, as_json: bool) -> None:
    """List agents with their slots in use, sessions and ready pooled sandboxes."""
    items = call_admin(state.config, AdminAPI.list_agents)
    if as_json:
        print_json([item.model_dump(mode="json") for item in items])
        return
    print_table(
        ("agent", "status", "backend", "cpu used/total", "mem used/total", "sessions", "pool", "heartbeat"),
        (_row(item) for item in items),
    )


def _row(item: AgentStatus) -> tuple[str, ...]:
    pool = ", ".join(f"{env}: {count}" for env, count in sorted(item.pool.items())) or "-"
    return (
        item.agent_id,
        item.status,
        item.backend,
        f"{_num(item.occupied.get('cpu', '0'))}/{_num(item.capacity.get('cpu', '0'))}",
        f"{_gib(item.occupied.get('mem', '0'))}/{_gib(item.capacity.get('mem', '0'))} GiB",
        str(item.sessions),
        pool,
        f"{item.last_heartbeat_s:.1f} s ago",
    )


def _num(value: str) -> str:
    return format(Decimal(value).normalize(), "f")


def _gib(value: str) -> str:
    return f"{Decimal(value) / 2**30:.1f}"
