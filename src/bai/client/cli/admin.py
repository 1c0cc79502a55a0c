"""``bai admin keypair ...``: keypair administration (needs an admin keypair). The
``bai admin policy`` group lives in policies.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import click

from bai.client.admin import AdminAPI
from bai.client.cli.context import CliState, pass_state
from bai.client.cli.output import print_fields, print_json, print_note, print_table
from bai.client.config import APIConfig
from bai.client.session import AsyncSession
from bai.common.wire import KeypairInfo

T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON and nothing else.")


def call_admin(config: APIConfig, action: Callable[[AdminAPI], Awaitable[T]]) -> T:
    async def call() -> T:
        async with AsyncSession(config) as api:
            return await action(api.Admin)

    return asyncio.run(call())


@click.group()
def admin() -> None:
    """Administration (admin keypairs only)."""


@admin.group()
def keypair() -> None:
    """Create, list, deactivate, activate and delete keypairs."""


@keypair.command()
@click.option("--user-id", default="user", show_default=True, help="Who the keypair belongs to.")
@click.option("--admin", "is_admin", is_flag=True, help="An admin keypair.")
@click.option("--concurrency", default=30, show_default=True, help="Sessions it may hold at once.")
@click.option("--rate-limit", default=10000, show_default=True, help="Requests per 15 minutes.")
@click.option("--expires-in-days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The keypair stops working after this many days (default: never).")
@click.option("--policy", default="default", show_default=True, help="Its resource policy (bai admin policy).")
@json_option
@pass_state
def create(state: CliState, *, user_id: str, is_admin: bool, concurrency: int, rate_limit: int,
           expires_in_days: float | None, policy: str, as_json: bool) -> None:
    """Create a keypair and print its secret key (shown this once only)."""
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    created = call_admin(
        state.config,
        lambda admin_api: admin_api.create_keypair(
            user_id=user_id, is_admin=is_admin, concurrency_limit=concurrency, rate_limit=rate_limit,
            expires_at=expires_at, resource_policy=policy,
        ),
    )
    if as_json:
        print_json(created.model_dump(mode="json"))
        return
    print_fields(
        [
            ("access key", created.access_key),
            ("secret key", created.secret_key),
            ("user", created.user_id),
            ("admin", "yes" if created.is_admin else "no"),
            ("resource policy", created.resource_policy),
            ("expires", created.expires_at or "never"),
        ],
        title="keypair created",
    )
    print_note("The secret key is not shown again.")


@keypair.command(name="list")
@json_option
@pass_state
def list_(state: CliState, as_json: bool) -> None:
    """List every keypair."""
    items = call_admin(state.config, AdminAPI.list_keypairs)
    if as_json:
        print_json([item.model_dump(mode="json") for item in items])
        return
    print_table(
        ("access key", "user", "admin", "active", "policy", "sessions", "concurrency", "rate limit", "created"),
        (_row(item) for item in items),
    )


@keypair.command()
@click.argument("access_key")
@pass_state
def deactivate(state: CliState, access_key: str) -> None:
    """Deactivate a keypair: its requests fail from now on."""
    call_admin(state.config, lambda admin_api: admin_api.deactivate_keypair(access_key))
    click.echo(f"deactivated {access_key}")


@keypair.command()
@click.argument("access_key")
@pass_state
def activate(state: CliState, access_key: str) -> None:
    """Activate a deactivated keypair."""
    call_admin(state.config, lambda admin_api: admin_api.activate_keypair(access_key))
    click.echo(f"activated {access_key}")


@keypair.command(name="set-policy")
@click.argument("access_key")
@click.argument("policy")
@pass_state
def set_policy(state: CliState, access_key: str, policy: str) -> None:
    """Move a keypair to another resource policy (its running sessions keep their limits)."""
    call_admin(state.config, lambda admin_api: admin_api.set_keypair_policy(access_key, policy))
    click.echo(f"{access_key} now uses resource policy {policy}")


@keypair.command()
@click.argument("access_key")
@pass_state
def delete(state: CliState, access_key: str) -> None:
    """Delete a keypair."""
    call_admin(state.config, lambda admin_api: admin_api.delete_keypair(access_key))
    click.echo(f"deleted {access_key}")


def _row(item: KeypairInfo) -> tuple[str, ...]:
    return (
        item.access_key,
        item.user_id,
        "yes" if item.is_admin else "no",
        "yes" if item.is_active else "no",
        item.resource_policy,
        str(item.num_sessions),
        str(item.concurrency_limit),
        str(item.rate_limit),
        item.created_at,
    )
