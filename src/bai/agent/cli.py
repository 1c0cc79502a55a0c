"""``bai agent``: one compute node, registering with a manager over HTTP.
Registered on the CLI through the ``bai.cli`` entry-point group."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click
from pydantic import SecretStr

from bai.agent.config import AgentConfig
from bai.agent.main import serve


@click.command("agent")
@click.option("--manager", "manager_url", required=True, help="The manager's URL, e.g. http://10.0.0.1:8091.")
@click.option("--cluster-secret-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="A file holding the manager's cluster secret.")
@click.option("--cluster-secret", envvar="BAI_AGENT_CLUSTER_SECRET", default=None,
              help="The cluster secret itself (prefer the file or the environment).")
@click.option("--agent-id", default=None, help="Default: agent-<hostname>.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--rpc-host", default="127.0.0.1", show_default=True, help="Where the manager reaches this agent.")
@click.option("--rpc-port", type=int, default=6011, show_default=True, help="0 picks a free port.")
@click.option("--heartbeat", type=float, default=2.0, show_default=True, help="Seconds between heartbeats.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def agent(manager_url: str, cluster_secret_file: Path | None, cluster_secret: str | None, agent_id: str | None,
          data_dir: Path | None, rpc_host: str, rpc_port: int, heartbeat: float, log_level: str) -> None:
    """Run an agent: sandboxes on this machine, scheduled by the manager."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    secret = cluster_secret_file.read_text().strip() if cluster_secret_file else cluster_secret
    if not secret:
        raise click.UsageError("give --cluster-secret-file (or BAI_AGENT_CLUSTER_SECRET)")
    options: dict[str, object] = {
        "manager_url": manager_url, "cluster_secret": SecretStr(secret), "rpc_host": rpc_host,
        "rpc_port": rpc_port, "heartbeat_interval_s": heartbeat,
    }
    if agent_id:
        options["agent_id"] = agent_id
    if data_dir:
        options["data_dir"] = data_dir.expanduser().resolve()
    config = AgentConfig.model_validate(options)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(config, stop)

    asyncio.run(run())
