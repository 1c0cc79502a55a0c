"""What the runner is told for a session of one catalog entry.

The runner (standard library only) cannot read the catalog, so the agent renders it:
the engine (``--engine``), the engine's settings (``--config``: a REPL's command,
sentinel, wrap, prompt...), the interpreter the runner itself runs on (a venv's python
for the Python ML environments) and the dirs bound read-only into the sandbox at their
own path (the venv), and per run the ``Execute`` fields: a compile-and-run query's
source file and steps, a batch run's steps.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bai.agent.environments.catalog import Environment, Runtime, batch_plan, query_plan

#: the runner engine of each runtime
ENGINES = {Runtime.PYTHON: "python", Runtime.REPL: "repl", Runtime.COMPILED: "command", Runtime.SCRIPT: "command"}
BATCH_STEPS = ("clean", "build", "exec")
#: a batch ``*`` for Java reads the working dir's .java files (to find the class with
#: main): at most this many, of at most this many bytes each
JAVA_FILES_MAX = 64
JAVA_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Launch:
    """One catalog entry, resolved on this host (``venv``: its built venv, if it has one)."""

    env: Environment
    venv: Path | None = None

    @property
    def engine(self) -> str:
        return ENGINES[self.env.runtime]

    def runner_config(self) -> dict[str, Any]:
        """The runner's ``--config``: the language's version, and a REPL's settings."""
        config: dict[str, Any] = {"version": self.env.tag}
        repl = self.env.repl
        if repl is not None:
            config.update(
                command=list(repl.command),
                sentinel=repl.sentinel,
                wrap=repl.wrap,
                prompt=repl.prompt,
                echo=repl.echo,
                init=repl.init,
            )
            if repl.program is not None:
                plan = query_plan(self.env, "", self.venv)
                config["program"] = {"match": repl.program, "source": plan.source, "run": plan.run}
        return config

    def runner_python(self, default: str) -> str:
        """The interpreter the runner runs on: a venv entry's python, else ``default``."""
        if self.env.runtime is Runtime.PYTHON and self.venv is not None and self.env.interpreter:
            return self.env.interpreter.format(venv=self.venv)
        return default

    @property
    def binds(self) -> tuple[Path, ...]:
        """Host paths the sandbox sees read-only at the same path: the venv and what the
        catalog's ``host.binds`` names."""
        venv = (self.venv,) if self.venv is not None else ()
        return (*venv, *(Path(path) for path in self.env.host.binds))

    def query(self, code: str) -> tuple[str, list[list[str]]]:
        """A query's source file and steps for the command engine; ("", []) for an
        engine that runs the code itself (python, repl)."""
        if self.engine != "command":
            return "", []
        plan = query_plan(self.env, code, self.venv)
        steps = [["compile", plan.compile]] if plan.compile else []
        return plan.source, [*steps, ["run", plan.run]]

    def batch(self, options: Mapping[str, str | None], workdir: Path) -> list[list[str]]:
        """The ``[step, command]`` pairs of a batch run: a step's command as given, ``"*"``
        for the catalog's default (a Makefile wins the build; no default, as for clean or
        an interpreted language's build: skipped), None or "" to skip it."""
        wanted = {step: (options.get(step) or "").strip() for step in BATCH_STEPS}
        defaults: dict[str, str | None] = {"clean": None}
        if "*" in wanted.values():
            files = _list_dir(workdir)
            java = _java_sources(workdir, files) if self.env.source == "public-class" else None
            plan = batch_plan(self.env, files, java, self.venv)
            defaults.update(build=plan.build, exec=plan.exec)
        steps: list[list[str]] = []
        for step in BATCH_STEPS:
            command = wanted[step]
            if command == "*":
                command = defaults.get(step) or ""
            if command:
                steps.append([step, command])
        return steps


def _list_dir(workdir: Path) -> list[str]:
    try:
        return sorted(os.listdir(workdir))
    except OSError:
        return []


def _java_sources(workdir: Path, files: list[str]) -> dict[str, str]:
    """The text of the working dir's .java files (regular files only; the sandbox's own
    files, so no link is followed and the reads are capped)."""
    sources: dict[str, str] = {}
    for name in [name for name in files if name.endswith(".java")][:JAVA_FILES_MAX]:
        with contextlib.suppress(OSError):
            fd = os.open(workdir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    sources[name] = os.read(fd, JAVA_FILE_BYTES).decode("utf-8", "replace")
            finally:
                os.close(fd)
    return sources
