"""``bai auth-test`` and ``bai version``: is the server there, and do my keys work."""

from __future__ import annotations

import asyncio
import secrets

import click

from bai.client.cli.context import CliState, pass_state
from bai.client.config import CLIENT_API_VERSION, APIConfig
from bai.client.errors import ProtocolError
from bai.client.models import ServerVersion
from bai.client.session import AsyncSession, client_version


@click.command(name="auth-test")
@pass_state
def auth_test(state: CliState) -> None:
    """Check that the server accepts your keypair."""
    config = state.config
    asyncio.run(_auth_test(config))
    click.echo(f"authorized: {config.access_key} at {config.endpoint}")


@click.command()
@pass_state
def version(state: CliState) -> None:
    """Print the client's version and the server's."""
    click.echo(f"client: bai {client_version()} (API {CLIENT_API_VERSION})")
    server = asyncio.run(_server_version(state.config))
    manager = f" (manager {server.manager})" if server.manager else ""
    click.echo(f"server: API {server.version}{manager} at {state.config.endpoint}")


async def _auth_test(config: APIConfig) -> None:
    echo = secrets.token_hex(8)
    async with AsyncSession(config) as api:
        answer = await api.auth_test(echo)
    if answer.echo != echo or answer.authorized != "yes":
        raise ProtocolError(f"the server answered the auth test with {answer.model_dump()}")


async def _server_version(config: APIConfig) -> ServerVersion:
    async with AsyncSession(config) as api:
        return await api.server_version()
