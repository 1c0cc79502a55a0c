"""BAI_TEST_REQUIRE (tests/capabilities.py): a skip for a capability the run demands is a
failure with its reason; one it does not demand stays a skip, counted and explained by
``-ra``. Each case runs pytest in a subprocess on a small test file, with the suite's
hooks loaded as a plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.capabilities import CAPABILITIES, required

ROOT = Path(__file__).resolve().parents[2]

TESTS = '''
from tests.capabilities import needs, require_or_skip


@needs("docker", "no engine here")
def test_marked() -> None:
    pass


def test_imperative() -> None:
    require_or_skip("sandbox", "no bubblewrap here")


@needs("toolchains", None)
def test_present() -> None:
    pass
'''


def pytest_run(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_tiny.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k != "BAI_TEST_REQUIRE"}
    env["PYTHONPATH"] = str(ROOT)
    if require is not None:
        env["BAI_TEST_REQUIRE"] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.capabilities", "-p", "no:cacheprovider", "-c", "/dev/null",
         "--rootdir", str(tmp_path), "-ra", "-q", str(tmp_path / "test_tiny.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_without_the_variable_a_missing_capability_is_a_skip_with_its_reason(tmp_path: Path) -> None:
    result = pytest_run(tmp_path, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 2 skipped" in result.stdout
    assert "SKIPPED [1] test_tiny.py:5: no engine here" in result.stdout  # at the test, as a skipif was
    assert "no bubblewrap here" in result.stdout


def test_a_demanded_capability_that_is_missing_fails_with_its_reason(tmp_path: Path) -> None:
    result = pytest_run(tmp_path, "docker")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 skipped, 1 error" in result.stdout  # fails in its setup, before its fixtures
    assert "ERROR test_tiny.py::test_marked - Failed: required capability 'docker'" in result.stdout
    assert "no engine here" in result.stdout and "no bubblewrap here" in result.stdout


def test_all_demands_every_capability_the_imperative_ones_too(tmp_path: Path) -> None:
    result = pytest_run(tmp_path, "all")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed, 1 error" in result.stdout
    assert "required capability 'sandbox' (BAI_TEST_REQUIRE) is missing: no bubblewrap here" in result.stdout


def test_an_unknown_name_stops_the_run(tmp_path: Path) -> None:
    result = pytest_run(tmp_path, "docker,dokcer")
    assert result.returncode == 4, result.stdout + result.stderr  # a usage error, before any test
    assert "unknown capabilities ['dokcer']" in result.stderr


def test_the_names_parse() -> None:
    assert required({}) == frozenset()
    assert required({"BAI_TEST_REQUIRE": " sandbox , docker,"}) == {"sandbox", "docker"}
    assert required({"BAI_TEST_REQUIRE": "all"}) == set(CAPABILITIES)
