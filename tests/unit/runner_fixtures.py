"""Fixtures of the runner's tests: one runner per test, for each interpreter the
runner must work on (the venv's, Debian's /usr/bin/python3, and Python 3.9)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_client import RunnerClient, interpreters

from tests.capabilities import needs

#: seconds an interrupted run gets before the runner kills its REPL (2 s in production)
GRACE = 0.5

INTERPRETERS = [
    pytest.param(path, id=name, marks=needs("interpreters", None if path else f"no {name} interpreter here"))
    for name, path in interpreters()
]


@pytest.fixture(params=INTERPRETERS)
def python(request: pytest.FixtureRequest) -> str:
    path: str = request.param
    return path


@pytest.fixture
def runner(python: str, tmp_path: Path) -> Iterator[RunnerClient]:
    with RunnerClient.start(
        python, tmp_path / "runner.log", "--interrupt-grace", str(GRACE), cwd=str(tmp_path)
    ) as client:
        yield client
