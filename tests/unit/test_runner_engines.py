"""The runner's repl and command engines and its batch steps, driven the way the agent
drives them (real runner processes, no sandbox): bash stands in for a language REPL,
sh and cc for the compile-and-run steps."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_client import RunnerClient, RunResult
from runner_fixtures import GRACE, python, runner

from bai.runner.engines.language_repl import LineFilter
from bai.runner.protocol import Execute, Failure, Finished, Interrupt, StepFinished
from tests.capabilities import needs

__all__ = ["python", "runner"]  # fixtures, from runner_fixtures

BASH_REPL = {
    "command": ["bash", "--norc", "--noprofile"],
    "sentinel": "printf '%s\\n' '{marker}'; printf '%s\\n' '{marker}' >&2",
    "version": "test",
}


def start(tmp_path: Path, engine: str, config: dict[str, object] | None = None) -> RunnerClient:
    args = ["--engine", engine, "--interrupt-grace", str(GRACE)]
    if config is not None:
        args += ["--config", json.dumps(config)]
    return RunnerClient.start(sys.executable, tmp_path / "runner.log", *args, cwd=str(tmp_path))


@pytest.fixture
def bash_repl(tmp_path: Path) -> Iterator[RunnerClient]:
    with start(tmp_path, "repl", BASH_REPL) as client:
        yield client


@pytest.fixture
def command(tmp_path: Path) -> Iterator[RunnerClient]:
    with start(tmp_path, "command", {"version": "1"}) as client:
        yield client


def steps_run(client: RunnerClient, run_id: str, steps: list[list[str]], **fields: object) -> RunResult:
    client.send(Execute(run_id=run_id, code=str(fields.pop("code", "")), steps=steps, **fields))  # type: ignore[arg-type]
    return client.collect(run_id, timeout=30)


# -- the line filter -----------------------------------------------------------------


def test_the_filter_strips_prompts_drops_echo_and_finds_the_marker() -> None:
    echo: deque[str] = deque(["x = 1", "print(x)", "SENTINEL"])
    line_filter = LineFilter(re.compile(r"^((> )|(>> ))+"), echo)
    line_filter.expect("MK")
    out = "".join(line_filter.feed(chunk) for chunk in ["> ", "x = 1\n> print(x)", "\n1\n", "> > > out\n", ">> SE"])
    assert out == "1\nout\n"
    assert line_filter.feed("NTINEL\nlast wordsMK\n> ") == "last words"
    assert line_filter.seen and not echo
    assert line_filter.feed("ignored between runs\n") == ""


def test_a_partial_line_goes_out_unless_it_may_be_the_marker() -> None:
    line_filter = LineFilter(None, None)
    line_filter.expect("__bai_0123__")
    assert line_filter.feed("progress 10%") == "progress 10%"
    assert line_filter.feed(" 20%") == " 20%"
    assert line_filter.feed("\n__bai_") == "\n"  # held: it may be the marker's line
    assert line_filter.feed("0123__\n") == ""
    assert line_filter.seen


# -- the repl engine -------------------------------------------------------------------


def test_a_repl_keeps_state_and_separates_its_streams(bash_repl: RunnerClient) -> None:
    assert bash_repl.ready is not None and bash_repl.ready.engine == "repl"
    assert bash_repl.ready.language_version == "test"
    first = bash_repl.run("x=41; cd /tmp")
    assert first.exit_code == 0 and first.stdout == "" and first.stderr == ""
    second = bash_repl.run("echo $((x + 1)) $PWD; echo oops >&2; printf 'no newline'")
    assert second.stdout == "42 /tmp\nno newline" and second.stderr == "oops\n"
    assert bash_repl.run("for i in 1 2 3; do\n  echo $i\ndone").stdout == "1\n2\n3\n"


def test_a_dead_repl_is_reported_and_started_afresh(bash_repl: RunnerClient) -> None:
    bash_repl.run("kept=1")
    died = bash_repl.run("echo bye; exit 7")
    assert died.exit_code == 7 and died.finished.engine_restarted
    assert died.stdout == "bye\n" and died.stderr.startswith("the bash process exited with status 7;")
    assert "state is lost" in died.stderr
    again = bash_repl.run('echo "kept=${kept:-gone}"')
    assert again.stdout == "kept=gone\n" and not again.finished.engine_restarted


def test_an_interrupt_stops_the_query_or_the_repl_is_replaced(bash_repl: RunnerClient) -> None:
    run_id = bash_repl.start_run("echo started; sleep 30; echo never")
    bash_repl.wait_output("started")
    bash_repl.send(Interrupt())
    result = bash_repl.collect(run_id, timeout=10)  # long before the sleep could end
    assert "never" not in result.stdout
    assert bash_repl.run("echo alive").stdout == "alive\n"


def test_an_interrupt_ends_a_query_that_waits_for_the_repl_to_warm_up(tmp_path: Path) -> None:
    # the REPL is not warm before its init's sleep ends: the query waits for it, queued
    with start(tmp_path, "repl", {**BASH_REPL, "init": "sleep 30"}) as client:
        run_id = client.start_run("echo never")
        client.send(Interrupt())  # read after the Execute: the query is queued by then
        result = client.collect(run_id, timeout=10)  # long before the sleep could end
        assert result.exit_code == 130 and result.stdout == ""


def test_a_repl_that_cannot_start_fails_its_query(tmp_path: Path) -> None:
    config = {**BASH_REPL, "command": ["/nonexistent/repl"]}
    with start(tmp_path, "repl", config) as client:
        result = client.run("1", timeout=10)
        assert result.exit_code == 127 and result.finished.engine_restarted
        assert "/nonexistent/repl" in result.stderr


def test_the_repl_engine_needs_its_settings(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="did not start"):
        start(tmp_path, "repl", {"command": ["bash"]}).close()


# -- the command engine ----------------------------------------------------------------


@needs("toolchains", None if shutil.which("cc") else "no C compiler here")
def test_each_query_is_written_compiled_and_run(command: RunnerClient, tmp_path: Path) -> None:
    steps = [["compile", "cc -o main main.c"], ["run", "./main"]]
    code = '#include <stdio.h>\nint main(void) { puts("compiled"); return 3; }'
    result = steps_run(command, "c1", steps, code=code, source="main.c")
    assert (result.exit_code, result.stdout) == (3, "compiled\n")
    assert (tmp_path / "main.c").read_text() == code
    broken = steps_run(command, "c2", steps, code="int main(void) { return nope; }", source="main.c")
    assert broken.exit_code != 0 and "nope" in broken.stderr and broken.stdout == ""
    assert not broken.of_type(StepFinished)  # query mode reports no steps


def test_a_query_needs_steps_and_a_plain_source_name(command: RunnerClient) -> None:
    for fields in ({"source": "main.c"}, {"source": "../escape.c", "steps": [["run", "true"]]}):
        command.send(Execute(run_id="bad", code="x", **fields))  # type: ignore[arg-type]
        assert command.expect(Failure).run_id == "bad"
    assert steps_run(command, "ok", [["run", "echo fine"]]).stdout == "fine\n"


# -- batch steps (any engine) ------------------------------------------------------------


def test_batch_steps_report_clean_and_build_and_hold_the_build_log(runner: RunnerClient) -> None:
    steps = [["clean", "echo cleaning"], ["build", "echo building; echo warn >&2"], ["exec", "echo running"]]
    result = steps_run(runner, "b1", steps, mode="batch")
    assert [(m.step, m.exit_code) for m in result.of_type(StepFinished)] == [("clean", 0), ("build", 0)]
    assert result.exit_code == 0 and result.stdout == "cleaning\nrunning\n" and result.stderr == ""
    logged = steps_run(runner, "b2", steps, mode="batch", build_log=True)
    assert logged.stdout == "cleaning\nbuilding\nrunning\n" and logged.stderr == "warn\n"
    assert runner.run("print('the REPL is still there')").stdout == "the REPL is still there\n"


def test_a_failing_build_ends_the_batch_with_its_output(runner: RunnerClient) -> None:
    steps = [["build", "echo 'error: broken' >&2; exit 4"], ["exec", "echo never"]]
    result = steps_run(runner, "b3", steps, mode="batch")
    assert [(m.step, m.exit_code) for m in result.of_type(StepFinished)] == [("build", 4)]
    assert result.exit_code == 4 and result.stderr == "error: broken\n" and "never" not in result.stdout
    assert steps_run(runner, "b4", [], mode="batch").exit_code == 0  # every step skipped


def test_a_batch_is_interrupted_and_busy_meanwhile(runner: RunnerClient) -> None:
    # The shell starts its job before it says 'started': in 'echo started; sleep 30' the
    # SIGINT could come while dash vforks sleep, whose child takes it before its exec,
    # and dash waits out the sleep (the grace's kill then made it 137, one run in six on
    # a loaded host). Interrupted in 'wait', the shell dies of the SIGINT.
    steps = [["exec", "sleep 30 & echo started; wait"], ["exec", "echo no"]]
    runner.send(Execute(run_id="long", code="", mode="batch", steps=steps))
    runner.wait_output("started")
    runner.send(Execute(run_id="other", code="1"))
    assert runner.expect(Failure).run_id == "other"
    runner.send(Interrupt())
    result = runner.collect("long", timeout=10)
    assert result.exit_code == 130 and "no" not in result.stdout
    finished = result.finished
    assert isinstance(finished, Finished) and finished.wall_ms < 30_000  # the sleep did not run out
