"""The ``bai`` command: the built-in commands, the ``bai.cli`` entry points, and the error edge.

Other packages add command groups through the entry-point group ``bai.cli``
(``server = "bai.server.cli:server"``); each is imported only when it is run,
or asked for help, so ``bai --help`` stays fast. One that fails to import is
skipped with a warning.

Every BaiError a command raises ends here as one red line, ``error: <message>``,
with exit status 1; so does any other exception, unless BAI_DEBUG=1 asks for
the traceback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import EntryPoint
from typing import Any

import click

from bai.client.cli import admin, agents, connection, environments, events, files, policies, run, sessions, shell
from bai.client.cli.context import CliState
from bai.client.cli.output import print_error
from bai.client.cli.plugins import EntryPointSource, installed_entry_points, load_command
from bai.common.errors import BaiError

admin.admin.add_command(agents.agent)
admin.admin.add_command(policies.policy)

BUILTIN_COMMANDS: tuple[click.Command, ...] = (
    run.run,
    *sessions.COMMANDS,
    *files.COMMANDS,
    admin.admin,
    connection.auth_test,
    connection.version,
    events.events,
    shell.shell,
)

def debug_enabled() -> bool:
    return os.environ.get("BAI_DEBUG", "").lower() in ("1", "true", "yes")


class RootGroup(click.Group):
    """The root group: built-in commands, then entry points loaded on demand."""

    def __init__(self, *args: Any, entry_point_source: EntryPointSource, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._entry_point_source = entry_point_source
        self._entry_points: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, click.Command | None] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        point = self._plugin_points().get(cmd_name)
        return self._load(point) if point is not None else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list, without importing a plugin just to show its one-line help."""
        rows = []
        for name in self.list_commands(ctx):
            command = super().get_command(ctx, name) or self._loaded.get(name)
            if command is not None and command.hidden:
                continue
            summary = command.get_short_help_str(limit=formatter.width - 6 - len(name)) if command else ""
            rows.append((name, summary or f"(see: bai {name} --help)"))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BaiError as exc:
            if debug_enabled():
                raise
            print_error(str(exc))
        except Exception as exc:
            if debug_enabled():
                raise
            print_error(f"unexpected {type(exc).__name__}: {exc} (BAI_DEBUG=1 shows the traceback)")
        ctx.exit(1)

    def _plugin_points(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            builtins = set(self.commands)
            self._entry_points = {
                point.name: point for point in self._entry_point_source() if point.name not in builtins
            }
        return self._entry_points

    def _load(self, point: EntryPoint) -> click.Command | None:
        if point.name not in self._loaded:
            self._loaded[point.name] = load_command(point)
        return self._loaded[point.name]


def build_cli(entry_point_source: EntryPointSource = installed_entry_points) -> RootGroup:
    @click.group(
        cls=RootGroup,
        entry_point_source=entry_point_source,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    @click.version_option(package_name="bai", prog_name="bai", message="%(prog)s %(version)s")
    @click.pass_context
    def cli(ctx: click.Context) -> None:
        """bai: run code in sandboxed sessions through the Backend.AI API.

        Connects to BACKEND_ENDPOINT with BACKEND_ACCESS_KEY and BACKEND_SECRET_KEY.
        """
        if ctx.obj is None:
            ctx.obj = CliState(os.environ)

    for command in BUILTIN_COMMANDS:
        cli.add_command(command)
    cli.add_command(environments.env_group(entry_point_source))
    return cli


cli = build_cli()


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=argv, prog_name="bai")


if __name__ == "__main__":
    main()
