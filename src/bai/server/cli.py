"""``bai server``: the embedded server, registered on the CLI through the
``bai.cli`` entry-point group."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click

from bai.agent.backends import BACKENDS
from bai.common.stopping import DEFAULT_STOP_TIMEOUT_S, run_bounded
from bai.server.embedded import EmbeddedServer, default_data_dir


async def _main(server: EmbeddedServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        creds = await server.start()
    except BaseException:
        await server.stop()
        raise
    if creds.created:
        click.echo(creds.created_notice(server.data_dir / "client.env"), err=True)
    click.echo(f"bai server listening on {creds.endpoint} (data: {server.data_dir}; "
               f"credentials: {server.data_dir / 'client.env'})", err=True)
    await stop.wait()
    click.echo("bai server: stopping, destroying live sessions", err=True)
    await server.stop()


@click.command("server")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where state lives (default: $XDG_DATA_HOME/bai).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8091, show_default=True, help="0 picks a free port.")
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default=None,
              help="What runs sessions: local (bubblewrap) or docker. Default: BAI_AGENT_BACKEND, else local.")
@click.option("--keep-sessions", is_flag=True, default=False,
              help="On stop, leave docker sessions running; the next start takes them back.")
@click.option("--stop-timeout", type=click.FloatRange(min=0.5), default=DEFAULT_STOP_TIMEOUT_S, show_default=True,
              envvar="BAI_STOP_TIMEOUT", help="Seconds a stop may take; a step past them is logged and abandoned.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def server(data_dir: Path | None, host: str, port: int, backend: str | None, keep_sessions: bool,
           stop_timeout: float, log_level: str) -> None:
    """Run the embedded server: one manager and one local agent in this process."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    embedded = EmbeddedServer((data_dir or default_data_dir()).expanduser().resolve(), host, port, log_level,
                              backend=backend, keep_sessions=keep_sessions, stop_timeout_s=stop_timeout)
    try:
        run_bounded(_main(embedded), embedded.stop_budget)
    except OSError as exc:
        raise click.ClickException(f"cannot start the server: {exc}") from None
