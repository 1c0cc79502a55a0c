"""What an engine is, to the runner's dispatcher (main.Runner).

An engine owns the user's process(es) for one language and turns agent messages
into runs. It registers its own fds and timers with the loop and sends its output
through ``EngineContext.emit``. Each handler is called by ``Runner`` for one message
type; a request it refuses raises a ``RunnerError``, which the runner answers with
a ``Failure`` frame:

    RunnerError            a request the runner refuses (→ Failure)
     ├── Busy              Execute while a run is in progress
     ├── NotWaiting        Input while no run waits for input
     └── Unsupported       a mode this engine does not offer
"""

from __future__ import annotations

import abc

from bai.runner.protocol import Record, field

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    from typing import Any, Callable, ClassVar, Dict, Optional

    from bai.runner.engines.steps import StepRunner
    from bai.runner.loop import Loop
    from bai.runner.protocol import Complete, Execute, Input, Interrupt, Message, Ready


class RunnerError(Exception):
    def __init__(self, message: str, run_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id


class Busy(RunnerError):
    pass


class NotWaiting(RunnerError):
    pass


class Unsupported(RunnerError):
    pass


class EngineContext(Record):
    loop: Loop
    emit: Callable[[Message], None]
    # Called first thing in any child the engine forks: undoes what the runner set up
    # for itself alone (closes its fds: agent socket, epoll, signal wakeup; makes the
    # process dumpable again; gives it back the OOM score the runner started with).
    after_fork: Callable[[], None]
    # Seconds a run may go on after an Interrupt before its process is killed.
    interrupt_grace: float = 2.0
    # The engine's settings from the agent (``--config`` JSON): a REPL's command and
    # sentinel, the language's version...
    config: Dict[str, Any] = field(default_factory=dict)
    # Runs shell steps (batch mode, compile-and-run queries); set by the runner.
    steps: Optional[StepRunner] = None


class Engine(abc.ABC):
    name: ClassVar[str] = ""

    def __init__(self, context: EngineContext) -> None:
        self.context = context

    @property
    def busy(self) -> bool:
        """Whether a run of the engine's own is in progress (a batch cannot start)."""
        return False

    @abc.abstractmethod
    def start(self) -> Ready:
        """Start the user's process; the returned Ready is sent to the agent."""

    @abc.abstractmethod
    def execute(self, message: Execute) -> None: ...

    @abc.abstractmethod
    def provide_input(self, message: Input) -> None: ...

    @abc.abstractmethod
    def interrupt(self, message: Interrupt) -> None: ...

    @abc.abstractmethod
    def complete(self, message: Complete) -> None: ...

    def configure(self, environ: Dict[str, str]) -> None:
        """The runner has updated its own os.environ with ``environ`` (a pooled sandbox
        was claimed); pass it on to a user's process already started."""

    @abc.abstractmethod
    def child_exited(self, pid: int, status: int) -> None:
        """The loop reaped ``pid``; it may be none of this engine's."""

    @abc.abstractmethod
    def close(self) -> None:
        """Kill the user's processes; the runner is exiting."""
