"""Engines by name: the runner's ``--engine`` picks one."""

from __future__ import annotations

from bai.runner.engines.python import PythonEngine

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    from typing import Dict, Type

    from bai.runner.engines.base import Engine

ENGINES: Dict[str, Type[Engine]] = {engine.name: engine for engine in (PythonEngine,)}
