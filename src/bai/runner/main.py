"""The runner's entry point: the first process of a session's sandbox.

The agent starts it as PID 1 (``bwrap --as-pid-1``) with the agent's socket on an
inherited fd::

    /usr/bin/python3 -I -c "import sys; sys.path.insert(0, '/opt/bai'); \\
        from bai.runner.main import main; main()" --fd 3 --engine python

It must run on any Python >= 3.9 with the standard library alone. ``main`` makes the
process non-dumpable, ignores SIGINT (meant for the user's code, not for us), starts
the engine, sends ``Ready`` and serves the agent until its socket closes or a
``Shutdown`` comes; then it kills the user's processes and exits with status 0
(``os._exit``: the interpreter's finalization would only cost time).
"""

from __future__ import annotations

import _socket  # socket.py's C core: socket.py adds enums and selectors, milliseconds per start
import contextlib
import gc
import json
import os
import sys
import time

from bai.runner.agent_connection import AgentConnection
from bai.runner.engines import ENGINES, load_engine
from bai.runner.engines.base import Busy, EngineContext, RunnerError
from bai.runner.loop import Loop
from bai.runner.process import read_oom_score_adj, set_dumpable, write_oom_score_adj
from bai.runner.protocol import (
    Complete,
    Configure,
    Configured,
    Execute,
    Failure,
    Input,
    Interrupt,
    Message,
    PtyAck,
    PtyClose,
    PtyInput,
    PtyOpen,
    PtyResize,
    Ready,
    Record,
    Shutdown,
    field,
)
from bai.runner.terminal import Terminals

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    import signal as _signal
    from typing import Any, Callable, Dict, List, NoReturn, Optional

    from bai.runner.engines.steps import StepRunner
else:
    import _signal  # signal.py's C core, loaded at start-up anyway: signal.py adds enums (a ms)

USAGE = (
    "usage: runner (--fd N | --connect PATH) [--engine %s] [--interrupt-grace SECONDS] [--preload MODULE,...]"
    " [--config JSON] [--reconnect SECONDS]"
    % "|".join(sorted(ENGINES))
)
FLAGS = ("--fd", "--connect", "--engine", "--interrupt-grace", "--preload", "--config", "--reconnect")
RECONNECT_INTERVAL_S = 0.1  # between tries to reach a restarted agent


class Options(Record):
    fd: int = -1  # an inherited socket (the local backend), or
    connect: str = ""  # a unix socket's path the runner connects to (a container: bai.agent.backends.docker.backend)
    engine: str = "python"
    interrupt_grace: float = 2.0
    # modules imported before the REPL is forked: a claimed pooled session finds them
    # loaded, and their pages are shared with every REPL the runner forks
    preload: str = ""
    # the engine's settings, a JSON object (a REPL's command and sentinel...)
    config: Dict[str, Any] = field(default_factory=dict)
    # with --connect: when the agent's socket closes without a Shutdown (the agent crashed
    # or restarted), keep the session and connect again for this many seconds; 0: exit
    reconnect: float = 0.0


def parse_args(argv: List[str]) -> Options:
    """A hand-rolled parser: argparse would add milliseconds to every session start."""
    values: Dict[str, str] = {}
    rest = list(argv)
    while rest:
        flag = rest.pop(0)
        name, eq, value = flag.partition("=")
        if name not in FLAGS:
            raise SystemExit("%s\nunknown argument %r" % (USAGE, flag))
        if not eq:
            if not rest:
                raise SystemExit("%s\n%s needs a value" % (USAGE, name))
            value = rest.pop(0)
        values[name] = value
    try:
        options = Options(
            fd=int(values.get("--fd", "-1")),
            connect=values.get("--connect", ""),
            engine=values.get("--engine", "python"),
            interrupt_grace=float(values.get("--interrupt-grace", "2")),
            preload=values.get("--preload", ""),
            config=json.loads(values.get("--config", "{}")),
            reconnect=float(values.get("--reconnect", "0")),
        )
    except (KeyError, ValueError) as exc:
        raise SystemExit("%s\nbad or missing argument: %s" % (USAGE, exc)) from None
    if not isinstance(options.config, dict):
        raise SystemExit("%s\n--config must be a JSON object" % USAGE)
    if (options.fd >= 0) == bool(options.connect):
        raise SystemExit("%s\nexactly one of --fd and --connect" % USAGE)
    if options.reconnect and not options.connect:
        raise SystemExit("%s\n--reconnect needs --connect" % USAGE)
    if options.engine not in ENGINES:
        raise SystemExit("%s\nunknown engine %r" % (USAGE, options.engine))
    return options


class Runner:
    """Wires the agent connection to the engine: one handler per message type."""

    def __init__(self, sock: _socket.socket, options: Options) -> None:
        # The agent protects the runner from the OOM killer once it is Ready; the
        # user's processes must stay its prey, so children go back to this value.
        self._oom_score_adj = read_oom_score_adj()
        self.loop = Loop()
        self.options = options
        self.agent = AgentConnection(sock, self.loop, self._on_message, self._agent_gone)
        self._ready: Optional[Ready] = None  # what start() said: said again to a new agent
        self._shutting_down = False
        self._reconnect_until = 0.0
        context = EngineContext(
            loop=self.loop,
            emit=self.agent.send,
            after_fork=self._reset_in_child,
            interrupt_grace=options.interrupt_grace,
            config=options.config,
        )
        self._context = context
        self._steps: Optional[StepRunner] = None
        if options.engine != "python":  # python runs shell steps in batch mode only
            context.steps = self.steps
        self.engine = load_engine(options.engine)(context)
        self.terminals = Terminals(self.loop, self.agent.send, self._reset_in_child)
        self._handlers: Dict[type, Callable[[Any], None]] = {
            Execute: self._execute,
            Input: self.engine.provide_input,
            Interrupt: self._interrupt,
            Complete: self.engine.complete,
            Configure: self._configure,
            Shutdown: self._shutdown,
            PtyOpen: self.terminals.open,
            PtyInput: self.terminals.input,
            PtyResize: self.terminals.resize,
            PtyAck: self.terminals.ack,
            PtyClose: self.terminals.close,
        }

    def run(self) -> None:
        self.loop.watch_children(self._child_exited)
        try:
            self._ready = self.engine.start()
            self.agent.send(self._ready)
            self.loop.run()
        finally:
            self.terminals.close_all()
            if self._steps is not None:
                self._steps.close()
            self.engine.close()

    @property
    def steps(self) -> StepRunner:
        """The runner of shell steps, made (and its module imported) when first needed:
        the python engine's start does without it."""
        if self._steps is None:
            from bai.runner.engines.steps import StepRunner  # noqa: PLC0415 (start-up time)

            self._steps = self._context.steps = StepRunner(self._context)
        return self._steps

    def _execute(self, message: Execute) -> None:
        """Batch mode runs shell steps whatever the engine; a query goes to the engine."""
        if message.mode == "batch":
            if self.engine.busy:
                raise Busy("a run is in progress", message.run_id)
            self.steps.start(message, batch=True)
        elif self._steps is not None and self._steps.active:
            raise Busy("a run is in progress", message.run_id)
        else:
            self.engine.execute(message)

    def _interrupt(self, message: Interrupt) -> None:
        if self._steps is not None and self._steps.active:
            self._steps.interrupt()
        else:
            self.engine.interrupt(message)

    def _child_exited(self, pid: int, status: int) -> None:
        if self.terminals.child_exited(pid, status):
            return
        if self._steps is None or not self._steps.child_exited(pid, status):
            self.engine.child_exited(pid, status)

    def _on_message(self, message: Message) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            self.agent.send(Failure(message="the runner does not take %r messages" % message.TYPE))
            return
        try:
            handler(message)
        except RunnerError as exc:
            self.agent.send(Failure(message=exc.message, run_id=exc.run_id))

    def _configure(self, message: Configure) -> None:
        os.environ.update(message.environ)
        self.engine.configure(message.environ)
        self.agent.send(Configured())

    def _shutdown(self, message: Shutdown) -> None:
        self._shutting_down = True
        self.loop.stop()

    # -- the agent goes away and comes back (a container's runner: --reconnect) ----------

    def _agent_gone(self) -> None:
        """The agent's socket closed. Without a Shutdown before it and with --reconnect,
        the agent crashed or restarted: the session lives on (its REPL, its processes, its
        files) and the runner connects again until the window passes. A run in progress is
        interrupted, since no one is left to read it; open terminals are hung up."""
        if self._shutting_down or self.options.reconnect <= 0:
            self.loop.stop()
            return
        sys.stderr.write("bai runner: the agent went away; waiting %gs for it\n" % self.options.reconnect)
        self._interrupt(Interrupt())
        self.terminals.close_all()
        self._reconnect_until = time.monotonic() + self.options.reconnect
        self.loop.call_later(RECONNECT_INTERVAL_S, self._try_reconnect)

    def _try_reconnect(self) -> None:
        """Connect to a new agent, once the interrupted run is over: its last output and its
        Finished belong to the agent that went away (they are dropped), and a new agent must
        find the session free, not busy with a run it never started. The interrupt ends the
        run within ``--interrupt-grace`` seconds (the engine kills what outlives it)."""
        if self._run_in_progress():
            if time.monotonic() >= self._reconnect_until:
                sys.stderr.write("bai runner: the interrupted run outlived the window; exiting\n")
                self.loop.stop()
            else:
                self.loop.call_later(RECONNECT_INTERVAL_S, self._try_reconnect)
            return
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(self.options.connect)
        except OSError:
            sock.close()
            if time.monotonic() >= self._reconnect_until:
                sys.stderr.write("bai runner: no agent came back; exiting\n")
                self.loop.stop()
            else:
                self.loop.call_later(RECONNECT_INTERVAL_S, self._try_reconnect)
            return
        self.agent.reattach(sock)
        if self._ready is not None:
            self.agent.send(self._ready)

    def _run_in_progress(self) -> bool:
        return self.engine.busy or (self._steps is not None and self._steps.active)

    def _reset_in_child(self) -> None:
        """Undo in a forked child what the runner set up for itself alone."""
        self.loop.forget_in_child()
        self.agent.forget_in_child()
        set_dumpable(True)  # first: a non-dumpable process cannot write its own /proc files
        current = read_oom_score_adj()
        if self._oom_score_adj is not None and current != self._oom_score_adj:
            write_oom_score_adj(self._oom_score_adj)


def _ensure_std_fds() -> None:
    """fds 0-2 open (on /dev/null if missing), so no pipe or socket of ours lands on them."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)


def main(argv: Optional[List[str]] = None) -> NoReturn:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    _ensure_std_fds()
    preload(options.preload)
    _start_collecting()
    set_dumpable(False)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    sock = _connect(options)
    Runner(sock, options).run()
    _exit_now()


def _connect(options: Options) -> _socket.socket:
    """The agent's socket: inherited (``--fd``), or connected to ``--connect``'s path."""
    if options.connect:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.connect(options.connect)
        return sock
    return _socket.socket(fileno=options.fd)


def preload(names: str) -> List[str]:
    """Import each of the comma-separated modules; returns those that failed, each
    reported on stderr (the sandbox's diagnostics), as the session works without them."""
    failed = []
    for name in filter(None, (part.strip() for part in names.split(","))):
        try:
            __import__(name)
        except BaseException as exc:
            failed.append(name)
            sys.stderr.write("bai runner: cannot preload %s: %r\n" % (name, exc))
    return failed


def _start_collecting() -> None:
    """Freeze what the imports made and turn the collector on.

    What the imports made lives as long as the runner and its REPL children, which
    share its pages copy-on-write: frozen, no collection in either process walks it
    again, where the REPL's first full collection would write to every object's header
    and so copy most of the shared heap (about 2 MB) into the REPL. The REPL keeps the
    permanent generation. A boot line that starts with ``import gc; gc.disable();``
    spares the imports collections that find nothing to free (about 1.5 ms of CPU)."""
    gc.freeze()
    gc.enable()


def _exit_now() -> NoReturn:
    """Exit with status 0 without the interpreter's finalization: it would tear down
    every module and object one by one (milliseconds of CPU per session) for a process
    whose memory the kernel frees at once. The user's processes are gone already."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(0)
