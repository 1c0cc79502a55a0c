"""The command engine: each query is written to a file and compiled and/or run.

For compiled languages (C, C++, Go, Java, Rust) and for any language run file by file.
No state survives between queries but the files in the working dir. The agent renders
the commands from the catalog (``Execute.source``: the file the code goes to, e.g.
``main.c`` or ``Foo.java``; ``Execute.steps``: ``compile`` and ``run``); a compile that
fails ends the query with the compiler's exit code, its messages on stderr.
"""

from __future__ import annotations

from bai.runner.engines.base import Busy, Engine, RunnerError, Unsupported
from bai.runner.protocol import Completions, Ready

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    from bai.runner.engines.base import EngineContext
    from bai.runner.protocol import Complete, Execute, Input, Interrupt


def check_source_name(name: str, run_id: str) -> str:
    """A plain file name in the working dir (the agent's, but checked all the same)."""
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise RunnerError("not a source file name: %r" % name, run_id)
    return name


def write_source(name: str, code: str, run_id: str) -> None:
    try:
        with open(check_source_name(name, run_id), "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(code)
    except OSError as exc:
        raise RunnerError("cannot write %s: %s" % (name, exc.strerror or exc), run_id) from None


class CommandEngine(Engine):
    name = "command"

    def __init__(self, context: EngineContext) -> None:
        super().__init__(context)
        assert context.steps is not None
        self.steps = context.steps

    @property
    def busy(self) -> bool:
        return self.steps.active

    def start(self) -> Ready:
        return Ready(engine=self.name, language_version=str(self.context.config.get("version", "")))

    def execute(self, message: Execute) -> None:
        if self.steps.active:
            raise Busy("a run is in progress", message.run_id)
        if message.mode != "query":
            raise Unsupported("the command engine runs mode 'query' here, not %r" % message.mode, message.run_id)
        if not message.steps:
            raise RunnerError("a query of the command engine needs its steps", message.run_id)
        if message.source:
            write_source(message.source, message.code, message.run_id)
        self.steps.start(message, batch=False)

    def provide_input(self, message: Input) -> None:
        from bai.runner.engines.base import NotWaiting  # noqa: PLC0415 (rare)

        raise NotWaiting("the command engine does not read input", message.run_id)

    def interrupt(self, message: Interrupt) -> None:
        self.steps.interrupt()

    def complete(self, message: Complete) -> None:
        self.context.emit(Completions(items=[]))

    def child_exited(self, pid: int, status: int) -> None:
        """The steps' processes are the StepRunner's; nothing else is ours."""

    def close(self) -> None:
        self.steps.close()
