"""A run from its code to its end: ``AsyncComputeSession.run`` (and its blocking twin).

    out = await sess.run("print(6 * 7)")
    out.stdout, out.exit_code, out.stats          # "42\\n", 0, RunStats(...)

One execute call (API.md section 6) answers with what the run printed so far and a
status; ``collect`` keeps calling until the status is final: ``continue`` after
``continued`` and the batch steps' ``clean-finished`` / ``build-finished``, ``input``
after ``waiting-input``. Input comes from ``stdin`` only: a string is handed out a line
per request, a callable is asked with the prompt; without it (or once the string is used
up) the run is answered an empty line, so a script never hangs on a prompt nobody sees.
``on_output`` is called with each console item as its answer arrives: streaming for
callers that want it, at the pace of the server's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bai.common.agent_rpc import RunStats
from bai.common.errors import BaiError
from bai.common.wire import ConsoleItem, ExecMode, RunResult

#: The statuses that end a run; every other one asks for another call.
FINAL_STATUSES = frozenset({"finished", "exec-timeout"})
#: How long a cancelled run's interrupt may take before the cancellation goes on without it.
INTERRUPT_GRACE_SECONDS = 5.0

#: ``(kind, data)`` of one console item: ``stdout``/``stderr``/``log``/``html`` carry text,
#: ``media`` carries ``[mime, content]``.
OutputCallback = Callable[[str, Any], None]
#: Given the text printed since the last answer (the prompt), returns the line to send.
InputCallback = Callable[[str], str]
Stdin = str | InputCallback


@dataclass(frozen=True)
class RunOutput:
    """The whole of one run: every console item in order, the final status and exit
    code, what the run used (``stats``: with a final answer from a server that measures
    it) and the files the run reported."""

    run_id: str | None
    status: str  # "finished", or "exec-timeout" when the run hit its time limit
    exit_code: int | None
    console: list[ConsoleItem] = field(default_factory=list)
    stats: RunStats | None = None
    files: list[Any] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return self.text_of("stdout")

    @property
    def stderr(self) -> str:
        return self.text_of("stderr")

    def text_of(self, kind: str) -> str:
        """The text of every console item of ``kind``, joined."""
        return "".join(str(data) for item_kind, data in self.console if item_kind == kind)


class InputFeed:
    """Answers a run's requests for input from ``stdin`` (see the module docstring)."""

    def __init__(self, stdin: Stdin | None) -> None:
        self._ask = stdin if callable(stdin) else None
        self._lines = (stdin or "").splitlines() if isinstance(stdin, str) else []

    def answer(self, prompt: str) -> str:
        if self._ask is not None:
            return self._ask(prompt)
        return self._lines.pop(0) if self._lines else ""


Execute = Callable[[str | None, str, ExecMode], Awaitable[RunResult]]
Interrupt = Callable[[], Awaitable[None]]


async def collect(
    execute: Execute,
    interrupt: Interrupt,
    code: str,
    mode: ExecMode,
    *,
    stdin: Stdin | None = None,
    on_output: OutputCallback | None = None,
) -> RunOutput:
    """Run ``code`` to its end through ``execute`` (run id, code, mode → one answer).

    Cancelled (Ctrl-C in the blocking API), it interrupts the run before it re-raises,
    so the session is not left busy with a run nobody reads."""
    feed = InputFeed(stdin)
    console: list[ConsoleItem] = []
    prompt_from = 0  # where the text printed since the last answered prompt starts
    try:
        result = await execute(None, code, mode)
        while True:
            for item in result.console:
                console.append(item)
                if on_output is not None:
                    on_output(item[0], item[1])
            if result.status in FINAL_STATUSES:
                break
            if result.status == "waiting-input":
                prompt = "".join(str(data) for kind, data in console[prompt_from:] if kind == "stdout")
                prompt_from = len(console)
                result = await execute(result.run_id, feed.answer(prompt), "input")
            else:
                result = await execute(result.run_id, "", "continue")
    except asyncio.CancelledError:
        with contextlib.suppress(BaiError, TimeoutError):
            await asyncio.wait_for(interrupt(), INTERRUPT_GRACE_SECONDS)
        raise
    return RunOutput(
        run_id=result.run_id,
        status=result.status,
        exit_code=result.exit_code,
        console=console,
        stats=result.stats,
        files=result.files,
    )
