"""The ``bai`` command's parsing, help, plugins and error edge: everything that needs no server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest
from click.testing import CliRunner

from bai.client.cli.main import build_cli, cli
from bai.client.cli.output import format_age, format_bytes, format_run_stats, stats_rows
from bai.client.errors import ConnectionFailed
from bai.client.models import SessionStats
from bai.common.agent_rpc import RunStats
from bai.common.wire import RunResult

KEYS = {"BACKEND_ACCESS_KEY": "AKIAIOSFODNN7EXAMPLE", "BACKEND_SECRET_KEY": "s" * 40}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("BACKEND_", "SORNA_")) or name == "BAI_DEBUG":
            monkeypatch.delenv(name)


@pytest.fixture
def refused_endpoint() -> Iterator[str]:
    """An endpoint whose connections are refused: its port is bound but never listens, and
    stays bound (so no other process can take it) until the test ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("run", "ps", "info", "rm", "restart", "interrupt", "admin", "auth-test", "version"):
        assert f"  {name} " in result.stdout


def test_help_does_not_import_plugins_and_a_broken_one_is_skipped() -> None:
    broken = EntryPoint(name="broken", value="bai_no_such_module:command", group="bai.cli")
    root = build_cli(lambda: [broken])
    result = CliRunner().invoke(root, ["--help"])
    assert result.exit_code == 0
    assert "broken" in result.stdout
    assert "(see: bai broken --help)" in result.stdout
    assert "warning" not in result.stderr
    result = CliRunner().invoke(root, ["broken"])
    assert result.exit_code == 2
    assert "warning: skipping the command 'broken' (bai_no_such_module:command): ModuleNotFoundError" in (result.stderr)
    assert "No such command 'broken'" in result.stderr


def test_a_plugin_is_added_by_its_name_and_builtins_win() -> None:
    points = [
        EntryPoint(name="extra", value="bai.client.cli.sessions:ps", group="bai.cli"),
        EntryPoint(name="run", value="bai_no_such_module:run", group="bai.cli"),
        EntryPoint(name="odd", value="click.testing:CliRunner", group="bai.cli"),
    ]
    root = build_cli(lambda: points)
    result = CliRunner().invoke(root, ["extra", "--help"])
    assert result.exit_code == 0
    assert "List your sessions." in result.stdout
    result = CliRunner().invoke(root, ["run", "--help"])
    assert result.exit_code == 0
    assert "warning" not in result.stderr
    result = CliRunner().invoke(root, ["odd"])
    assert "not a click command" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "python", "-c", "1", "--env", "FOO"], "expected KEY=VALUE, got 'FOO'"),
        (["run", "python", "-c", "1", "--env", "=x"], "expected KEY=VALUE, got '=x'"),
        (["run", "python", "-c", "1", "--resource", "cpu"], "expected KEY=VALUE, got 'cpu'"),
        (["run", "python"], "give the code to run either with -c CODE or as FILEs"),
        (["rm"], "Missing argument 'NAME...'"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_run_with_a_file_and_code_at_once_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["run", "python", os.devnull, "-c", "print(1)"])
    assert result.exit_code == 2
    assert "either with -c CODE or as FILEs" in result.stderr


def test_a_missing_variable_is_one_error_line() -> None:
    result = CliRunner().invoke(cli, ["ps"], env=KEYS)
    assert result.exit_code == 1
    assert result.stderr == "error: BACKEND_ENDPOINT is not set\n"
    assert result.stdout == ""


def test_help_works_without_any_variable() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    assert "--resource SLOT=AMOUNT" in result.stdout


@pytest.mark.parametrize(
    "args",
    [["ps"], ["info", "demo"], ["run", "python", "-c", "1"], ["auth-test"], ["admin", "keypair", "list"]],
)
def test_connection_refused_is_one_error_line(args: list[str], refused_endpoint: str) -> None:
    endpoint = refused_endpoint
    result = CliRunner().invoke(cli, args, env={**KEYS, "BACKEND_ENDPOINT": endpoint})
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot connect to {endpoint}: connection refused\n"


def test_rm_reports_each_failure_and_exits_1(refused_endpoint: str) -> None:
    endpoint = refused_endpoint
    result = CliRunner().invoke(cli, ["rm", "one", "two"], env={**KEYS, "BACKEND_ENDPOINT": endpoint})
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: one: cannot connect to {endpoint}: connection refused",
        f"error: two: cannot connect to {endpoint}: connection refused",
    ]


def test_version_prints_the_client_before_the_server_error(refused_endpoint: str) -> None:
    endpoint = refused_endpoint
    result = CliRunner().invoke(cli, ["version"], env={**KEYS, "BACKEND_ENDPOINT": endpoint})
    assert result.exit_code == 1
    assert result.stdout.startswith("client: bai ")
    assert "(API v8.20240915)" in result.stdout
    assert result.stderr.startswith("error: cannot connect to")


def test_bai_debug_lets_the_exception_through(refused_endpoint: str) -> None:
    env = {**KEYS, "BACKEND_ENDPOINT": refused_endpoint, "BAI_DEBUG": "1"}
    result = CliRunner().invoke(cli, ["ps"], env=env)
    assert isinstance(result.exception, ConnectionFailed)


@pytest.mark.parametrize("module", ["bai.client.cli.main", "bai.client.cli"])
def test_python_dash_m_runs_the_cli(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: bai ")


def test_a_traceback_never_reaches_the_user_from_a_subprocess(refused_endpoint: str) -> None:
    env = {**os.environ, **KEYS, "BACKEND_ENDPOINT": refused_endpoint}
    env.pop("BAI_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "bai.client.cli.main", "info", "demo"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot connect to")
    assert len(result.stderr.splitlines()) == 1


def test_the_usage_table() -> None:
    stats = SessionStats.model_validate(
        {
            "version": 2,
            "status": "terminated",
            "cpu_used": {"current": "1234", "unit_hint": "msec"},
            "mem": {"current": "1048576", "stats.max": "52428800", "unit_hint": "bytes"},
            "io_write": {"current": "2048", "unit_hint": "bytes"},
            "io_scratch_size": {"current": "100", "unit_hint": "bytes"},
        }
    )
    assert stats_rows(stats) == [
        ("CPU time", "1234 ms"),
        ("memory peak", "50.0 MiB"),
        ("IO written", "2.0 KiB"),
        ("scratch size", "100 B"),
    ]


@pytest.mark.parametrize(
    ("milliseconds", "text"),
    [(999, "0s"), (59_000, "59s"), (61_000, "1m01s"), (3_600_000, "1h00m"), (3 * 86_400_000, "3d00h")],
)
def test_ages(milliseconds: int, text: str) -> None:
    assert format_age(milliseconds) == text


def test_sizes() -> None:
    assert (format_bytes(0), format_bytes(1536), format_bytes(3 * 2**30)) == ("0 B", "1.5 KiB", "3.0 GiB")


def test_run_stats_line() -> None:
    stats = RunStats(cpu_ms=301.4, wall_ms=304.6, mem_peak=12 * 2**20 + 2**19, mem_peak_scope="run")
    assert format_run_stats(stats) == "run: cpu 301 ms, memory peak 12.5 MiB, wall 305 ms"
    flooded = stats.model_copy(
        update={"mem_peak_scope": "session", "output_bytes": 50 * 2**20, "output_truncated": True}
    )
    assert format_run_stats(flooded) == (
        "run: cpu 301 ms, memory peak 12.5 MiB (the session's so far), wall 305 ms, output truncated (50.0 MiB written)"
    )


def test_run_result_stats_from_options() -> None:
    raw = {"cpu_ms": 1.5, "wall_ms": 2.0, "mem_peak": 10, "mem_peak_scope": "run", "output_bytes": 0,
           "output_truncated": False}  # fmt: skip
    result = RunResult(runId="r", status="finished", exitCode=0, options={"stats": raw})
    assert result.stats == RunStats(cpu_ms=1.5, wall_ms=2.0, mem_peak=10)
    assert RunResult(status="continued").stats is None
    assert RunResult(status="finished", options={"stats": {"cpu_ms": "lots"}}).stats is None  # not understood
