"""The runner's python engine end to end, under each interpreter the sandbox may offer
(the venv's, Debian's /usr/bin/python3, a 3.9): the runner must run on any Python >= 3.9
with the standard library alone."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from runner_client import SRC, RunnerClient
from runner_fixtures import python, runner

from bai.runner.protocol import (
    Complete,
    Completions,
    Execute,
    Failure,
    Input,
    Output,
    WaitingInput,
)
from tests.waiting import wait_for

__all__ = ["python", "runner"]  # fixtures, from runner_fixtures


def test_ready_names_engine_and_version(runner: RunnerClient, python: str) -> None:
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert runner.ready is not None
    assert (runner.ready.engine, runner.ready.language_version) == ("python", version)


def test_state_survives_across_runs(runner: RunnerClient) -> None:
    assert runner.run("x = 41").exit_code == 0
    assert runner.run("x += 1").exit_code == 0
    result = runner.run("print(x)")
    assert (result.stdout, result.stderr, result.exit_code) == ("42\n", "", 0)
    assert result.finished.wall_ms > 0
    assert not result.finished.engine_restarted


def test_last_expression_is_displayed(runner: RunnerClient) -> None:
    assert runner.run("1+1").stdout == "2\n"
    assert runner.run("y = 3\ny * 2").stdout == "6\n"
    assert runner.run("'a'").stdout == "'a'\n"
    assert runner.run("None").stdout == ""
    assert runner.run("z = 5").stdout == ""
    assert runner.run("_").stdout == "'a'\n"  # the REPL's last value


def test_a_script_displays_no_last_value_and_keeps_its_state(runner: RunnerClient) -> None:
    """A file's code (Execute.script) runs as a script: its final expression is evaluated
    (its side effects happen) but not displayed; the next interactive query displays."""
    runner.send(Execute(run_id="file", code="import os\ncount = 1\nos.getpid() and 'not shown'\ncount", script=True))
    result = runner.collect("file")
    assert (result.stdout, result.stderr, result.exit_code) == ("", "", 0)
    assert runner.run("count").stdout == "1\n"


def test_a_fresh_main_namespace_and_the_user_sys_path(runner: RunnerClient) -> None:
    result = runner.run(
        "import sys, os\n"
        "print(__name__, sys.modules['__main__'] is sys.modules[__name__], '__builtins__' in globals())\n"
        "print(repr(sys.path[0]))\n"
        f"print(any(os.path.abspath(p) == {str(SRC)!r} for p in sys.path if p))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'bai'))\n"
        "print(sorted(k for k in globals() if not k.startswith('__')))"
    )
    assert result.stdout == "__main__ True True\n''\nFalse\n[]\n['os', 'sys']\n", result.stderr


def test_stdout_and_stderr_keep_their_order(runner: RunnerClient) -> None:
    result = runner.run("import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')")
    assert result.merged() == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")]


def test_many_alternations_keep_their_order(runner: RunnerClient) -> None:
    result = runner.run(
        "import sys\nfor i in range(300):\n    print(i, file=(sys.stdout, sys.stderr)[i % 2])\n"
        "sys.stdout.buffer.write(b'bytes\\n')\n_ = sys.stderr.write('last\\n')"
    )
    expected = [(("stdout", "stderr")[i % 2], f"{i}\n") for i in range(300)]
    assert result.merged() == [*expected, ("stdout", "bytes\n"), ("stderr", "last\n")]


def test_subprocess_and_c_level_output_is_captured(runner: RunnerClient) -> None:
    result = runner.run(
        "import os, subprocess\n"
        "os.system('echo from-shell')\n"
        "subprocess.run(['sh', '-c', 'echo to-err >&2'])\n"
        "os.write(1, b'raw-out\\n')\n"
        "os.write(2, b'raw-err\\n')"
    )
    assert result.stdout.splitlines()[:1] == ["from-shell"]
    assert "raw-out\n" in result.stdout
    assert "to-err\n" in result.stderr and "raw-err\n" in result.stderr
    assert result.exit_code == 0


def test_output_streams_before_the_run_ends(runner: RunnerClient) -> None:
    run_id = runner.start_run("import time\nprint('first')\ntime.sleep(0.5)\nprint('second')")
    early = runner.wait_output("first")
    first_at = time.monotonic()
    assert all(isinstance(m, Output) and m.run_id == run_id for m in early)
    result = runner.collect(run_id)
    assert time.monotonic() - first_at >= 0.4
    assert result.stdout.endswith("second\n")


def test_utf8_split_across_reads_is_not_mangled(runner: RunnerClient) -> None:
    result = runner.run(
        "import os, time\ndata = 'é€😀'.encode()\n"
        "for i in range(len(data)):\n    os.write(1, data[i:i + 1])\n    time.sleep(0.02)\n"
        "print()\nprint('ü' * 200000)"
    )
    assert result.stdout == "é€😀\n" + "ü" * 200000 + "\n"
    assert "\ufffd" not in result.stdout


def test_an_exception_prints_the_users_traceback_only(runner: RunnerClient) -> None:
    result = runner.run("def f():\n    raise ValueError('boom')\n\nf()")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    assert "line 4, in <module>" in result.stderr
    assert "line 2, in f\n    raise ValueError('boom')" in result.stderr
    assert result.stderr.endswith("ValueError: boom\n")
    assert "bai" not in result.stderr and "runner" not in result.stderr
    assert runner.run("print('still alive')").stdout == "still alive\n"


def test_a_syntax_error_is_reported_without_a_traceback(runner: RunnerClient) -> None:
    result = runner.run("x = 1\nprint(x +)")
    assert result.exit_code == 1
    assert "SyntaxError" in result.stderr and "line 2" in result.stderr
    assert "Traceback" not in result.stderr and "bai" not in result.stderr
    assert runner.run("'return' ; return 1").exit_code == 1  # a SyntaxError found by compile, not parse


def test_sys_exit_sets_the_exit_code_and_keeps_the_state(runner: RunnerClient) -> None:
    runner.run("kept = 'yes'")
    assert runner.run("import sys\nsys.exit(3)").exit_code == 3
    assert runner.run("import sys\nsys.exit()").exit_code == 0
    result = runner.run("import sys\nsys.exit('bad thing')")
    assert (result.exit_code, result.stderr) == (1, "bad thing\n")
    assert runner.run("exit(4)").exit_code == 4  # site's exit() also closes sys.stdin
    result = runner.run("print(kept)")
    assert (result.stdout, result.finished.engine_restarted) == ("yes\n", False)


def test_input_round_trip(runner: RunnerClient) -> None:
    result = runner.run("name = input('who? ')\nprint('hi', name)", inputs=["bob"])
    [waiting] = result.of_type(WaitingInput)
    assert (waiting.prompt, waiting.password) == ("who? ", False)
    assert result.merged() == [("stdout", "who? hi bob\n")]
    # the prompt reached the agent before the question
    kinds = [type(m) for m in result.messages]
    assert kinds.index(Output) < kinds.index(WaitingInput)


def test_getpass_asks_for_a_password(runner: RunnerClient) -> None:
    result = runner.run("import getpass\npw = getpass.getpass()\nprint(len(pw))", inputs=["secret"])
    [waiting] = result.of_type(WaitingInput)
    assert waiting.password is True
    assert result.stdout.endswith("6\n")


def test_stdin_reads_ask_for_input(runner: RunnerClient) -> None:
    result = runner.run(
        "import sys\na = sys.stdin.readline()\nb = sys.stdin.read()\nprint(repr(a), repr(b))",
        inputs=["one", "two"],
    )
    assert result.stdout == "'one\\n' 'two\\n'\n"
    assert len(result.of_type(WaitingInput)) == 2


def test_input_when_nothing_waits_is_a_failure(runner: RunnerClient) -> None:
    runner.send(Input(run_id="nobody", text="hello"))
    failure = runner.expect(Failure)
    assert failure.run_id == "nobody"
    assert runner.run("1").stdout == "1\n"


def test_execute_while_busy_is_refused(runner: RunnerClient) -> None:
    run_id = runner.start_run("import time\ntime.sleep(0.5)\nprint('done')")
    runner.send(Execute(run_id="second", code="print('no')"))
    result = runner.collect(run_id)
    [failure] = result.of_type(Failure)
    assert failure.run_id == "second" and "in progress" in failure.message
    assert result.stdout == "done\n"


def test_completion_uses_the_users_namespace(runner: RunnerClient) -> None:
    runner.run("import os\nmy_variable = 1")
    runner.send(Complete(code="x = my_va"))
    assert "my_variable" in runner.expect(Completions).items
    runner.send(Complete(code="os.pa", line="os.pa", row=0, col=5))
    assert "os.path" in runner.expect(Completions).items
    runner.send(Complete(code=""))
    assert runner.expect(Completions).items == []


def test_completion_while_busy_answers_empty(runner: RunnerClient) -> None:
    run_id = runner.start_run("import time\ntime.sleep(0.3)")
    runner.send(Complete(code="pri"))
    result = runner.collect(run_id)
    assert [m.items for m in result.of_type(Completions)] == [[]]


def test_output_between_runs_opens_the_next_run(runner: RunnerClient, tmp_path: Path) -> None:
    """The thread prints once the test says the run has finished (the file ``go``, in
    the REPL's cwd) and says so (``printed``) before the next run starts."""
    runner.run(
        "import os, threading, time\n"
        "def late():\n    while not os.path.exists('go'):\n        time.sleep(0.01)\n"
        "    print('late', flush=True)\n    open('printed', 'w').close()\n"
        "threading.Thread(target=late).start()"
    )
    (tmp_path / "go").touch()
    wait_for((tmp_path / "printed").exists, what="the thread's print")
    assert runner.run("'now'").stdout == "late\n'now'\n"


def test_a_finished_run_leaves_no_output_behind(runner: RunnerClient) -> None:
    result = runner.run("import sys\nfor i in range(2000):\n    print('x' * 100)\n    print('e', file=sys.stderr)")
    assert result.stdout == ("x" * 100 + "\n") * 2000
    assert result.stderr == "e\n" * 2000
    runner.send(Complete(code="pri"))
    assert isinstance(runner.recv(), Completions)  # no stray Output came after Finished
