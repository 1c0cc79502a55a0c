"""The REPL child: the user's persistent Python process.

Forked from the runner (engines/python_child.py); ``main`` never returns into the
runner's code. It gives the process the state of a fresh ``python3`` REPL (a new
``__main__``, the user's sys.path, no module of ours importable) with our stdio
(stdio.py), then serves the command channel until the runner goes away.

The runner imports this module (and so all the REPL needs) before it forks the child:
shared pages, not copies (see engines/python.py). Nothing here is imported late, once
the process has the user's sys.path, so no file of the user's (a ``token.py``, say)
ever stands in for a module the REPL uses (traceback, linecache, getpass).

A run: compile the cell; if its last statement is an expression, that statement is
compiled in 'single' mode so a non-None value is displayed (not in a run marked
``script``: a file's code, run as a script). SIGINT raises
KeyboardInterrupt only while the user's code runs, so the REPL itself never dies of
it; the runner's interrupt of a run whose code had not started yet (its SIGINT came
early, see ReplChild.interrupt) raises it as the code starts. Tracebacks leave out
every frame of this package. Exit codes: 0 ok; 1 for an exception, a SyntaxError or
an interrupt; ``n`` for ``SystemExit(n)``.
"""

from __future__ import annotations
import __future__

import _ast  # ast.py's C core: all compile_cell needs, without ast.py's import cost
import builtins
import getpass
import linecache
import os
import site
import sys
import traceback
import types

from bai.runner.control import (
    RUN_NUMBER_BYTES,
    Channel,
    CompleteCode,
    CompleteDone,
    RunCode,
    RunDone,
    SetEnviron,
)
from bai.runner.stdio import FdWriter, InputReader, Prompter, Requester, StreamSwitch

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    import signal as _signal
    from _socket import socket
    from typing import Any, Callable, Dict, List, NoReturn, Optional, Set

    from bai.runner.protocol import Message
else:
    import _signal  # signal.py's C core, loaded at start-up anyway: signal.py adds enums (a ms)

PACKAGE_DIR = os.path.dirname(__file__)
_HIDDEN_PREFIX = PACKAGE_DIR + os.sep
RUNNER_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(PACKAGE_DIR)))
FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag
COMPLETION_LIMIT = 500


def main(commands: socket, requests: socket, interrupts: int) -> NoReturn:
    requester = Requester(Channel(requests))
    switch = StreamSwitch(requester)
    stdout = FdWriter(1, "<stdout>", switch)
    stderr = FdWriter(2, "<stderr>", switch)
    prompter = Prompter(requester)
    stdin = InputReader(prompter)
    sys.stdout, sys.stderr, sys.stdin = stdout, stderr, stdin
    for name, stream in (("__stdout__", stdout), ("__stderr__", stderr), ("__stdin__", stdin)):
        setattr(sys, name, stream)  # typeshed has them Final; they are plain attributes
    builtins.input = prompter.input
    sys.displayhook = display
    getpass.getpass = prompter.getpass
    repl = Repl(Channel(commands), switch, stderr, interrupts)

    def after_fork_in_child() -> None:
        repl.forked = True
        requester.after_fork()
        commands.close()
        os.close(interrupts)

    os.register_at_fork(after_in_child=after_fork_in_child)
    _signal.signal(_signal.SIGINT, repl.on_sigint)
    sys.argv = [""]
    sys.path[:] = user_sys_path(sys.path)
    for name in [name for name in sys.modules if name == "bai" or name.startswith("bai.")]:
        del sys.modules[name]
    repl.serve()


def user_sys_path(path: List[str]) -> List[str]:
    """sys.path as plain ``python3`` would have it: '' first, then PYTHONPATH, then the
    interpreter's own; the user site too. The runner runs isolated (-I), the REPL not."""
    base = [entry for entry in path if entry and os.path.abspath(entry) != RUNNER_ROOT]
    extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    result = ["", *extra, *base]
    user_site = site.getusersitepackages()
    if not os.environ.get("PYTHONNOUSERSITE") and os.path.isdir(user_site):
        at = next((i for i, e in enumerate(result) if e.endswith("-packages")), len(result))
        result.insert(at, user_site)
    return result


def display(value: object) -> None:
    """sys.displayhook, in one write where the default makes two (repr, then newline)."""
    if value is None:
        return
    builtins._ = None  # type: ignore[attr-defined]
    sys.stdout.write(repr(value) + "\n")
    builtins._ = value  # type: ignore[attr-defined]


def compile_cell(source: str, filename: str, flags: int, script: bool = False) -> List[types.CodeType]:
    """The cell as code objects, the last in 'single' mode if it is an expression,
    so that its value is displayed as at a prompt; a ``script`` (a file) displays none."""
    tree: _ast.Module = compile(source, filename, "exec", _ast.PyCF_ONLY_AST | flags, dont_inherit=True)
    if script or not (tree.body and isinstance(tree.body[-1], _ast.Expr)):
        return [compile(tree, filename, "exec", flags, dont_inherit=True)]
    last = _ast.Interactive(body=[tree.body.pop()])
    codes = [compile(tree, filename, "exec", flags, dont_inherit=True)] if tree.body else []
    codes.append(compile(last, filename, "single", flags, dont_inherit=True))
    return codes


def format_exception(exc: BaseException) -> str:
    """The traceback the user's code earned, without this package's frames."""
    summary = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    _hide_our_frames(summary, set())
    return "".join(summary.format())


def _hide_our_frames(summary: Optional[traceback.TracebackException], seen: Set[int]) -> None:
    if summary is None or id(summary) in seen:
        return
    seen.add(id(summary))
    frames = [frame for frame in summary.stack if not frame.filename.startswith(_HIDDEN_PREFIX)]
    summary.stack = traceback.StackSummary.from_list(frames)
    _hide_our_frames(summary.__cause__, seen)
    _hide_our_frames(summary.__context__, seen)
    for group_member in getattr(summary, "exceptions", None) or ():
        _hide_our_frames(group_member, seen)


def completions(namespace: Dict[str, Any], text: str) -> List[str]:
    if not text:
        return []
    import rlcompleter  # noqa: PLC0415 (on first use only: it imports readline)

    completer = rlcompleter.Completer(namespace)
    items: List[str] = []
    for state in range(COMPLETION_LIMIT):
        item = completer.complete(text, state)
        if item is None:
            break
        if item not in items:
            items.append(item)
    return items


class Repl:
    def __init__(self, commands: Channel, switch: StreamSwitch, stderr: FdWriter, interrupts: int) -> None:
        module = types.ModuleType("__main__")
        module.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = module
        self.namespace = module.__dict__
        self.forked = False  # in a process forked by the user's code
        self._commands = commands
        self._switch = switch
        self._stderr = stderr
        self._running = False
        self._runs = 0  # RunCode commands taken: the number of the current run
        self._interrupts = interrupts  # read end of the runner's interrupt pipe, non-blocking
        self._interrupted_run = 0  # the latest run number read from it
        self._future_flags = 0
        os.set_blocking(interrupts, False)

    def on_sigint(self, signum: int, frame: Optional[types.FrameType]) -> None:
        if self._running:
            raise KeyboardInterrupt

    def serve(self) -> NoReturn:
        handlers: Dict[type, Callable[[Any], None]] = {
            RunCode: self._run,
            CompleteCode: self._complete,
            SetEnviron: self._set_environ,
        }
        while True:
            try:  # KeyboardInterrupt here: the user's code installed a SIGINT handler that raises
                message: Optional[Message] = self._commands.recv()
                if message is None:
                    os._exit(0)
                handler = handlers.get(type(message))
                if handler is not None:
                    handler(message)
            except KeyboardInterrupt:
                continue

    def _run(self, message: RunCode) -> None:
        self._switch.last = 0  # the runner drained both pipes when the last run ended
        try:
            exit_code = self._execute(message.code, message.script)
        except KeyboardInterrupt as exc:  # landed in our frames, on the edge of the user's code
            self._running = False
            self._report(exc)
            exit_code = 1
        if self.forked:  # the user's code forked and this child ran it to its end
            os._exit(exit_code & 0xFF)
        self._commands.send(RunDone(exit_code))

    def _execute(self, source: str, script: bool = False) -> int:
        self._runs += 1
        filename = "<input-%d>" % self._runs
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        try:
            codes = compile_cell(source, filename, self._future_flags, script)
        except (SyntaxError, ValueError, OverflowError, MemoryError) as exc:
            self._report(exc)
            return 1
        for code in codes:
            self._future_flags |= code.co_flags & FUTURE_FLAGS
        self._running = True
        try:
            if self._interrupt_came_early():
                raise KeyboardInterrupt
            for code in codes:
                exec(code, self.namespace)
        except SystemExit as exc:
            self._running = False
            return self._exit_code(exc)
        except BaseException as exc:
            self._running = False
            self._report(exc)
            return 1
        finally:
            self._running = False
        return 0

    def _interrupt_came_early(self) -> bool:
        """Whether the runner interrupted this run before its code started: its number
        is the latest in the interrupt pipe (earlier runs' numbers are stale)."""
        try:
            while True:
                data = os.read(self._interrupts, 4096)
                if not data:
                    break
                self._interrupted_run = int.from_bytes(data[-RUN_NUMBER_BYTES:], "little")
        except BlockingIOError:
            pass
        return self._interrupted_run == self._runs

    def _exit_code(self, exc: SystemExit) -> int:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        self._stderr.write("%s\n" % (code,))
        return 1

    def _report(self, exc: BaseException) -> None:
        sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, exc.__traceback__
        setattr(sys, "last_exc", exc)  # noqa: B010 (3.12+ name; setattr keeps 3.9 and mypy quiet)
        self._stderr.write(format_exception(exc))

    def _set_environ(self, message: SetEnviron) -> None:
        os.environ.update(message.environ)

    def _complete(self, message: CompleteCode) -> None:
        try:
            items = completions(self.namespace, message.text)
        except Exception:
            items = []
        self._commands.send(CompleteDone(items))
