"""``bai env``: the environments a server offers (``bai env list``, asking ``GET /environments``),
and the operator commands of the agent host (``bai env build``, ``bai env list --local``).

The operator commands belong to the agent package (bai.agent.environments.cli), which the
client does not import: ``bai env`` borrows them from the ``env`` entry point of the
``bai.cli`` group, loaded when one of them runs or is asked for help. Without the agent
package installed they are simply absent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from bai.client.cli.context import CliState, pass_state
from bai.client.cli.output import print_json, print_note, print_table
from bai.client.cli.plugins import EntryPointSource, load_command
from bai.client.config import APIConfig
from bai.client.session import AsyncSession
from bai.common.wire import EnvironmentOffer

OPERATOR_ENTRY_POINT = "env"


class EnvGroup(click.Group):
    """``list`` of its own; the agent's operator commands beside it, loaded on demand."""

    def __init__(self, *args: Any, entry_point_source: EntryPointSource, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._entry_point_source = entry_point_source
        self._operator: click.Group | None = None
        self._operator_loaded = False

    def operator_group(self) -> click.Group | None:
        """The agent's ``env`` group (build, the host's own listing); None where the agent
        package is not installed."""
        if not self._operator_loaded:
            self._operator_loaded = True
            for point in self._entry_point_source():
                if point.name == OPERATOR_ENTRY_POINT:
                    command = load_command(point)
                    self._operator = command if isinstance(command, click.Group) else None
        return self._operator

    def list_commands(self, ctx: click.Context) -> list[str]:
        operator = self.operator_group()
        return sorted(set(super().list_commands(ctx)) | set(operator.list_commands(ctx) if operator else ()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        operator = self.operator_group()
        return operator.get_command(ctx, cmd_name) if operator else None


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON and nothing else.")
@click.option(
    "--local",
    is_flag=True,
    help="Not the server's: what this host can run, from the catalog (operators building on an agent host).",
)
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              envvar="BAI_AGENT_ENVIRONMENT_CATALOG", help="With --local: a catalog file instead of the shipped one.")
@click.option("--base", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="With --local: where built environments live (see: bai env build --help).")  # fmt: skip
@pass_state
@click.pass_context
def list_(
    ctx: click.Context, state: CliState, as_json: bool, local: bool, catalog_path: Path | None, data_dir: Path | None
) -> None:
    """The environments the server's agents offer: which agents can start each, and why
    the others cannot (with the command that fixes it)."""
    if local:
        _list_locally(ctx, as_json=as_json, catalog_path=catalog_path, data_dir=data_dir)
        return
    if catalog_path or data_dir:
        raise click.UsageError("--catalog and --base describe this host: use them with --local")
    items = asyncio.run(_environments(state.config))
    if as_json:
        print_json([item.model_dump(mode="json") for item in items])
        return
    print_table(("name", "tag", "available", "agents", "why not"), (_row(item) for item in items))
    if not items:
        print_note("no agent is connected, or none offers an environment")


def _list_locally(ctx: click.Context, **options: Any) -> None:
    group = ctx.parent.command if ctx.parent else None
    operator = group.operator_group() if isinstance(group, EnvGroup) else None
    local = operator.get_command(ctx, "list") if operator else None
    if local is None:
        raise click.UsageError("--local needs the agent package (bai.agent), which is not installed here")
    ctx.invoke(local, **options)


async def _environments(config: APIConfig) -> list[EnvironmentOffer]:
    async with AsyncSession(config) as api:
        return await api.list_environments()


def _row(item: EnvironmentOffer) -> tuple[str, ...]:
    why = "; ".join(f"{agent}: {reason}" for agent, reason in sorted(item.unavailable.items()))
    return (item.name, item.tag or "-", "yes" if item.available else "no", ", ".join(item.agents) or "-", why)


def env_group(entry_point_source: EntryPointSource) -> EnvGroup:
    """``bai env``, its operator commands found through ``entry_point_source``."""

    @click.group("env", cls=EnvGroup, entry_point_source=entry_point_source)
    def env() -> None:
        """Environments: what the server offers, and (on an agent host) building the missing ones."""

    env.add_command(list_)
    return env
