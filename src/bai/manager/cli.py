"""``bai manager``: the manager alone, for clusters whose agents run elsewhere
(``bai agent`` on each node). Registered on the CLI through the ``bai.cli``
entry-point group."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sys
from pathlib import Path

import click

from bai.common.stopping import DEFAULT_STOP_TIMEOUT_S, StopBudget, run_bounded
from bai.manager.config import ManagerConfig
from bai.manager.core import Manager
from bai.manager.serve import ApiServer, write_private


def _cluster_secret(data_dir: Path, given: str | None) -> str:
    """The secret agents must present; made once and kept in ``<data_dir>/cluster.secret``."""
    path = data_dir / "cluster.secret"
    if given:
        return given
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    write_private(path, secret + "\n")
    return secret


async def _run(config: ManagerConfig, log_level: str, budget: StopBudget) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    manager = Manager(config)
    api = ApiServer(manager, config.host, config.port, log_level)
    await manager.start()
    try:
        await api.start()
        creds = await api.publish_credentials(config.data_dir)
        if creds.created:
            click.echo(creds.created_notice(config.data_dir / "client.env"), err=True)
        click.echo(f"bai manager listening on {creds.endpoint}; agents join with --manager {creds.endpoint} "
                   f"--cluster-secret-file {config.data_dir / 'cluster.secret'}", err=True)
        await stop.wait()
    finally:  # the steps of EmbeddedServer.stop, less the agent
        await budget.step("ending the waits on sessions", manager.begin_stop())
        await budget.step("draining the HTTP server", api.stop())
        await budget.step("stopping the manager", manager.stop())


@click.command("manager")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8091, show_default=True)
@click.option("--cluster-secret", envvar="BAI_MANAGER_CLUSTER_SECRET", default=None,
              help="What agents must present (default: made once, kept in DATA_DIR/cluster.secret).")
@click.option("--agent-lost-after", type=float, default=10.0, show_default=True,
              help="Seconds without a heartbeat before an agent and its sessions are lost.")
@click.option("--keep-sessions/--destroy-sessions", default=True, show_default=True,
              help="On stop, leave sessions running on their agents for the next start to take back.")
@click.option("--stop-timeout", type=click.FloatRange(min=0.5), default=DEFAULT_STOP_TIMEOUT_S, show_default=True,
              envvar="BAI_STOP_TIMEOUT", help="Seconds a stop may take; a step past them is logged and abandoned.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def manager(data_dir: Path, host: str, port: int, cluster_secret: str | None, agent_lost_after: float,
            keep_sessions: bool, stop_timeout: float, log_level: str) -> None:
    """Run the manager alone; agents register with it over HTTP."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = ManagerConfig(data_dir=data_dir, host=host, port=port,
                           cluster_secret=_cluster_secret(data_dir, cluster_secret),
                           agent_lost_after_s=agent_lost_after, keep_sessions=keep_sessions)
    try:
        budget = StopBudget(stop_timeout)
        run_bounded(_run(config, log_level, budget), budget)
    except OSError as exc:
        raise click.ClickException(f"cannot start the manager: {exc}") from None
