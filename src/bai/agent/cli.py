"""``bai agent``: one compute node, registering with a manager over HTTP.
Registered on the CLI through the ``bai.cli`` entry-point group."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import click
from pydantic import SecretStr

from bai.agent.backends import BACKENDS
from bai.agent.config import AgentConfig
from bai.agent.main import serve
from bai.agent.seccomp import Policy, PolicyError, Rule, policy_for
from bai.agent.seccomp.docker import docker_profile
from bai.common.stopping import DEFAULT_STOP_TIMEOUT_S, StopBudget, run_bounded


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
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default=None,
              help="What runs sessions: local (bubblewrap) or docker. Default: BAI_AGENT_BACKEND, else local.")
@click.option("--keep-sessions", is_flag=True, default=None,
              help="On stop, leave docker sessions running for the next start to re-attach "
                   "(default: BAI_AGENT_KEEP_SESSIONS, else destroy them).")
@click.option("--stop-timeout", type=click.FloatRange(min=0.5), default=DEFAULT_STOP_TIMEOUT_S, show_default=True,
              envvar="BAI_STOP_TIMEOUT", help="Seconds a stop may take; a step past them is logged and abandoned.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def agent(manager_url: str, cluster_secret_file: Path | None, cluster_secret: str | None, agent_id: str | None,
          data_dir: Path | None, rpc_host: str, rpc_port: int, heartbeat: float, backend: str | None,
          keep_sessions: bool | None, stop_timeout: float, log_level: str) -> None:
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
    if backend:
        options["backend"] = backend
    if keep_sessions:
        options["keep_sessions"] = True
    if data_dir:
        options["data_dir"] = data_dir.expanduser().resolve()
    config = AgentConfig.model_validate(options)

    budget = StopBudget(stop_timeout)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(config, stop, budget)

    run_bounded(run(), budget)


@click.group("seccomp")
def seccomp() -> None:
    """The sandbox's syscall policy: show it, export it for Docker."""


_ENVIRONMENT = click.option("-e", "--environment", default="python", show_default=True,
                            help="Whose policy: the environment's overlay applies when there is one.")
_OVERLAY = click.option("--overlay", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                        envvar="BAI_AGENT_SECCOMP_OVERLAY", default=None,
                        help="The operator's overlay for every environment (TOML).")
_ENV_DIR = click.option("--environment-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
                        envvar="BAI_AGENT_SECCOMP_ENVIRONMENT_DIR", default=None,
                        help="A dir of per-environment overlays, <environment>.toml.")


def _policy(environment: str, overlay: Path | None, environment_dir: Path | None) -> Policy:
    try:
        return policy_for(environment, overlay, environment_dir)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None


@seccomp.command("export")
@_ENVIRONMENT
@_OVERLAY
@_ENV_DIR
@click.option("--machine", default=None, help="The architecture (uname -m); default: this machine's.")
def export(environment: str, overlay: Path | None, environment_dir: Path | None, machine: str | None) -> None:
    """Print the policy as a Docker seccomp profile (docker run --security-opt seccomp=FILE)."""
    profile = docker_profile(_policy(environment, overlay, environment_dir), machine)
    click.echo(profile.model_dump_json(indent=2, exclude_none=True))


@seccomp.command("show")
@_ENVIRONMENT
@_OVERLAY
@_ENV_DIR
@click.option("--json", "as_json", is_flag=True, help="One JSON array of rules.")
def show(environment: str, overlay: Path | None, environment_dir: Path | None, as_json: bool) -> None:
    """List the denied syscalls (each fails with EPERM inside a sandbox)."""
    policy = _policy(environment, overlay, environment_dir)
    rows = [
        {"syscall": rule.syscall, "when": _describe_args(rule), "why": rule.why}
        for rule in policy.rules
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(row["syscall"]) for row in rows)
    when_width = max(len(row["when"]) for row in rows)
    click.echo(f"{'SYSCALL':<{width}}  {'WHEN':<{when_width}}  WHY")
    for row in rows:
        click.echo(f"{row['syscall']:<{width}}  {row['when']:<{when_width}}  {row['why']}")
    click.echo(f"\n{len(rows)} rules, default: allow; a denied call fails with EPERM")


def _describe_args(rule: Rule) -> str:
    if not rule.args:
        return "always"
    parts = []
    for arg in rule.args:
        if arg.mask is None:
            parts.append(f"arg{arg.index} == {arg.value:#x}")
        else:
            parts.append(f"arg{arg.index} & {arg.mask:#x} == {arg.value:#x}")
    return " and ".join(parts)
