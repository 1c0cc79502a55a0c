"""Engines by name: the runner's ``--engine`` picks one, and only its module is imported
(each import costs start-up time)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    from typing import Dict, Tuple, Type

    from bai.runner.engines.base import Engine

#: engine name → (module, class)
ENGINES: Dict[str, Tuple[str, str]] = {
    "python": ("bai.runner.engines.python", "PythonEngine"),
    "repl": ("bai.runner.engines.language_repl", "ReplEngine"),
    "command": ("bai.runner.engines.command", "CommandEngine"),
}


def load_engine(name: str) -> Type[Engine]:
    module, cls = ENGINES[name]
    # __import__, not importlib.import_module: importing importlib costs most of a millisecond
    engine: Type[Engine] = getattr(__import__(module, fromlist=[cls]), cls)
    return engine
