"""``bai run``: run code in a (new or reused) session, streaming its output live.

Query mode runs ``-c CODE`` or one FILE's contents in the session's REPL (state kept
with ``--name``); a FILE runs as a script (the query option ``script``), so only
``-c CODE`` echoes the value of a final expression, as a prompt does. Batch mode
(API.md section 6) uploads the FILEs into /home/work and runs the environment's build
and exec steps (``*``, the defaults: a Makefile, ``main.<ext>``)
or ``--build`` / ``--exec`` commands; it is chosen by more than one FILE, by ``--build``,
``--exec`` or ``--clean``, or by ``--batch``.

Exit status: the run's exit code; 130 after Ctrl-C (the run is interrupted);
1 with ``error: ...`` when the session or the stream fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import click

from bai.client.cli.context import CliState, pass_state
from bai.client.cli.output import format_run_stats, print_error, print_note, print_stats
from bai.client.compute import AsyncComputeSession
from bai.client.config import APIConfig
from bai.client.errors import ProtocolError
from bai.client.models import StreamFrame
from bai.client.session import AsyncSession
from bai.common.agent_rpc import RunStats
from bai.common.errors import BaiError

EXIT_INTERRUPTED = 130
#: The exit status of a run stopped by its time limit, as timeout(1) has it.
EXIT_TIMED_OUT = 124
INTERRUPT_GRACE_SECONDS = 5.0


def parse_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` options into a dict; a malformed one is a usage error naming it."""
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        pairs[key.strip()] = value
    return pairs


LIMIT_NAMES = frozenset({"pids", "scratch", "execTimeout", "idleTimeout", "maxLifetime", "output"})


@dataclass(frozen=True)
class RunPlan:
    image: str
    code: str
    name: str | None
    destroy: bool
    show_stats: bool
    envs: Mapping[str, str] = field(default_factory=dict)
    resources: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    files: Sequence[Path] = ()  # batch mode: uploaded first, relative to basedir
    basedir: Path | None = None
    batch: Mapping[str, str | None] | None = None  # batch mode's clean / build / exec; None: query mode
    script: bool = False  # query mode: the code is a FILE's, run as a script (no final value echoed)


@click.command()
@click.argument("image")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-c", "--code", help="The code to run (instead of a FILE).")
@click.option("--build", metavar="CMD", help="Batch mode: the build step (default: the environment's, '*').")
@click.option("--exec", "exec_", metavar="CMD", help="Batch mode: the exec step (default: the environment's, '*').")
@click.option("--clean", metavar="CMD", help="Batch mode: a clean step before the build.")
@click.option("--batch", "force_batch", is_flag=True, help="Batch mode even for one FILE.")
@click.option("--basedir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Batch mode: FILEs keep their paths relative to this dir (default: the current dir).")  # fmt: skip
@click.option("--name", help="Run in the session of this name, creating it when absent; it is kept.")
@click.option("--rm", is_flag=True, help="Destroy the session after the run (always so without --name).")
@click.option(
    "--stats",
    is_flag=True,
    help="Print what the run used (CPU, memory peak, wall time) after it, and the session's usage if destroyed.",
)
@click.option(
    "-e",
    "--env",
    multiple=True,
    callback=parse_pairs,
    metavar="KEY=VALUE",
    help="An environment variable of the session.",
)
@click.option(
    "-r",
    "--resource",
    multiple=True,
    callback=parse_pairs,
    metavar="SLOT=AMOUNT",
    help="e.g. cpu=1, mem=512m.",
)
@click.option(
    "-l",
    "--limit",
    multiple=True,
    callback=parse_pairs,
    metavar="NAME=VALUE",
    help="A limit of the new session, within the keypair's policy: pids, scratch, execTimeout, "
    "idleTimeout, maxLifetime (seconds), output (per run), e.g. execTimeout=30, scratch=256m.",
)
@pass_state
@click.pass_context
def run(
    ctx: click.Context,
    state: CliState,
    *,
    image: str,
    files: tuple[Path, ...],
    code: str | None,
    build: str | None,
    exec_: str | None,
    clean: str | None,
    force_batch: bool,
    basedir: Path | None,
    name: str | None,
    rm: bool,
    stats: bool,
    env: dict[str, str],
    resource: dict[str, str],
    limit: dict[str, str],
) -> None:
    """Run code in a session of IMAGE (e.g. python).

    The code comes from -c CODE or from FILE; the exit status is the code's.
    Output is printed as it comes, stdout to stdout and stderr to stderr; what
    the code reads from its stdin is read from this terminal.
    """
    if (code is None) == (not files):
        raise click.UsageError("give the code to run either with -c CODE or as FILEs")
    unknown = sorted(set(limit) - LIMIT_NAMES)
    if unknown:
        raise click.BadParameter(
            f"unknown limit {', '.join(unknown)} (known: {', '.join(sorted(LIMIT_NAMES))})", param_hint="--limit"
        )
    batch = None
    if force_batch or len(files) > 1 or build is not None or exec_ is not None or clean is not None:
        if code is not None:
            raise click.UsageError("batch mode runs FILEs, not -c CODE")
        batch = {"clean": clean, "build": build if build is not None else "*", "exec": exec_ or "*"}
    source = code if code is not None else files[0].read_text() if batch is None else ""
    plan = RunPlan(
        image, source, name, destroy=rm or name is None, show_stats=stats, envs=env, resources=resource,
        limits=limit, files=files if batch is not None else (), basedir=basedir, batch=batch,
        script=code is None and batch is None,
    )  # fmt: skip
    try:
        exit_code = asyncio.run(run_once(state.config, plan, Terminal()))
    except KeyboardInterrupt:
        exit_code = EXIT_INTERRUPTED
    ctx.exit(exit_code)


async def run_once(config: APIConfig, plan: RunPlan, terminal: Terminal) -> int:
    """Create (or reuse) the session, stream one run, destroy the session when the plan says so."""
    async with AsyncSession(config) as api:
        session = await api.ComputeSession.get_or_create(
            plan.image, name=plan.name, envs=plan.envs, resources=plan.resources, limits=plan.limits or None
        )
        try:
            if plan.files:
                sent = await session.upload(list(plan.files), basedir=plan.basedir)
                print_note(f"uploaded {len(sent)} file(s) to /home/work: {', '.join(sent)}")
            exit_code = await stream_run(session, plan.code, terminal, plan.batch, script=plan.script)
            if plan.show_stats and terminal.run_stats is not None:
                print_note(format_run_stats(terminal.run_stats))
        except BaseException:
            if plan.destroy:
                with contextlib.suppress(BaiError):
                    await session.destroy()
            raise
        if plan.destroy:
            usage = await session.destroy()
            if plan.show_stats:
                print_stats(session.name, usage, stderr=True)
        return exit_code


async def stream_run(
    session: AsyncComputeSession,
    code: str,
    terminal: Terminal,
    batch: Mapping[str, str | None] | None = None,
    *,
    script: bool = False,
) -> int:
    """Stream one run (query mode, or batch mode with ``batch``'s steps) to the terminal;
    returns its exit code (130 when cancelled by Ctrl-C). ``script``: a query of a
    file's code, run as a script (the query option ``script``): only interactive code
    (``-c``) echoes the value of its last expression."""
    mode: Literal["query", "batch"] = "batch" if batch is not None else "query"
    opts: Mapping[str, Any] | None = batch if batch is not None else {"script": True} if script else None
    try:
        async with session.stream_execute(code, mode=mode, opts=opts) as stream:
            async for frame in stream:
                terminal.show(frame)
                terminal.run_stats = frame.stats or terminal.run_stats
                if frame.status in ("clean-finished", "build-finished") and frame.exit_code:
                    step = frame.status.split("-", 1)[0]
                    print_note(f"the {step} step exited with {frame.exit_code}")
                elif frame.status == "waiting-input":
                    await stream.send_input(await terminal.read_line(password=frame.is_password))
                elif frame.status == "exec-timeout":
                    print_error("the run hit its time limit")
                    return EXIT_TIMED_OUT  # whatever the interrupted code exited with, as timeout(1) does
                elif frame.status == "finished":
                    return frame.exit_code or 0
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancelled us. Closing the socket interrupts the run on the
        # server; say so explicitly too, in case the close is slow to be noticed.
        with contextlib.suppress(BaiError, TimeoutError):
            await asyncio.wait_for(session.interrupt(), INTERRUPT_GRACE_SECONDS)
        print_note("interrupted")
        return EXIT_INTERRUPTED
    raise ProtocolError("the execute stream ended without a result")


class Terminal:
    """Where a run's output goes and its input comes from: this process's stdio."""

    def __init__(self, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.run_stats: RunStats | None = None  # what the run used, from its last frame
        self._renderers: dict[str, Callable[[Any], None]] = {
            "stdout": self._to_stdout,
            "stderr": self._to_stderr,
            "log": self._to_stderr,
            "media": self._describe_media,
            "html": lambda data: self._note(f"[html output, {len(str(data))} characters]"),
        }

    def show(self, frame: StreamFrame) -> None:
        for kind, data in frame.console:
            self._renderers.get(kind, _ignore)(data)
        self.stdout.flush()
        self.stderr.flush()

    async def read_line(self, *, password: bool) -> str:
        """One line from stdin (no echo for a password on a terminal), read off the event loop.

        A daemon thread rather than the loop's executor, so that Ctrl-C during the
        read does not leave asyncio.run waiting on a blocked thread at exit.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()
        reader = self._read_password if password and sys.stdin.isatty() else self._read_line

        def read() -> None:
            try:
                text = reader()
            except (OSError, EOFError, ValueError):
                text = ""
            loop.call_soon_threadsafe(_settle, answer, text)

        threading.Thread(target=read, name="bai-run-stdin", daemon=True).start()
        return await answer

    @staticmethod
    def _read_line() -> str:
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")

    @staticmethod
    def _read_password() -> str:
        return getpass.getpass(prompt="")

    def _to_stdout(self, data: Any) -> None:
        self.stdout.write(str(data))

    def _to_stderr(self, data: Any) -> None:
        self.stderr.write(str(data))

    def _describe_media(self, data: Any) -> None:
        mime = data[0] if isinstance(data, list | tuple) and data else "unknown"
        self._note(f"[{mime} output not shown]")

    def _note(self, text: str) -> None:
        self.stderr.write(text + "\n")


def _settle(future: asyncio.Future[str], text: str) -> None:
    if not future.done():
        future.set_result(text)


def _ignore(data: Any) -> None:
    pass
