"""Engines by name: the runner's ``--engine`` picks one."""

from __future__ import annotations

from typing import Dict, Type

from bai.runner.engines.base import Engine
from bai.runner.engines.python import PythonEngine

ENGINES: Dict[str, Type[Engine]] = {engine.name: engine for engine in (PythonEngine,)}
