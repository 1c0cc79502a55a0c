"""``bai events [SESSION]``: lifecycle events as they happen, until Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime

import click

from bai.client.cli.context import CliState, pass_state
from bai.client.config import APIConfig
from bai.client.session import AsyncSession


async def _follow(config: APIConfig, name: str | None, as_json: bool) -> None:
    async with AsyncSession(config) as api:
        def connected() -> None:
            click.echo(f"following the events of {name or 'your sessions'}; Ctrl-C stops", err=True)

        async for event in api.session_events(name=name, on_connected=connected):
            if as_json:
                line = json.dumps({"event": event.name, **event.data.model_dump()})
            else:
                data = event.data
                reason = f"  ({data.reason})" if data.reason else ""
                line = f"{datetime.now():%H:%M:%S}  {event.name:<22} {data.sessionName}{reason}"
            click.echo(line)
            sys.stdout.flush()


@click.command()
@click.argument("session", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event (JSON lines).")
@pass_state
def events(state: CliState, session: str | None, as_json: bool) -> None:
    """Follow the lifecycle events of your sessions (or of SESSION, by name)."""
    try:
        asyncio.run(_follow(state.config, session, as_json))
    except KeyboardInterrupt:
        sys.exit(130)
