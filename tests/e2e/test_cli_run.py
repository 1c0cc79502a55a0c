"""``bai run`` end to end: the real entry point in a subprocess against the embedded server."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer

pytestmark = pytest.mark.sandbox

BAI = [sys.executable, "-m", "bai.client.cli.main"]


@pytest.fixture
def server(bai_server: RunningServer) -> RunningServer:
    """The run's embedded server (tests/conftest.py): a broken conftest fails these tests."""
    return bai_server


def bai(server: Any, *args: str, stdin: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BAI, *args],
        env=server.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def name(server: Any) -> Iterator[str]:
    """A fresh session name, destroyed after the test whatever happened."""
    session_name = f"cli-{uuid.uuid4().hex[:8]}"
    yield session_name
    bai(server, "rm", session_name)


def test_a_named_session_keeps_its_state(server: Any, name: str) -> None:
    first = bai(server, "run", "python", "-c", "x = 41", "--name", name)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    second = bai(server, "run", "python", "-c", "print(x + 1)", "--name", name)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "42\n"


def test_a_file_runs_in_query_mode(server: Any, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("def double(n):\n    return 2 * n\n\nfor i in range(3):\n    print(double(i))\n")
    result = bai(server, "run", "python", str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0\n2\n4\n"


def test_a_file_runs_as_a_script_and_only_interactive_code_echoes_its_last_value(server: Any, tmp_path: Path) -> None:
    """``open(...).write(...)`` returns 4: a prompt shows it, a script does not."""
    script = tmp_path / "writer.py"
    script.write_text("open('out.txt', 'w').write('data')\n")
    from_file = bai(server, "run", "python", str(script))
    assert (from_file.returncode, from_file.stdout) == (0, ""), from_file.stderr
    interactive = bai(server, "run", "python", "-c", "open('out.txt', 'w').write('data')")
    assert (interactive.returncode, interactive.stdout) == (0, "4\n"), interactive.stderr


def test_stdout_and_stderr_go_to_their_own_streams(server: Any) -> None:
    code = "import sys\nfor i in range(2):\n    print('out', i)\n    print('err', i, file=sys.stderr)\n"
    result = bai(server, "run", "python", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "out 0\nout 1\n"
    assert result.stderr == "err 0\nerr 1\n"


def test_output_is_printed_while_the_code_runs(server: Any) -> None:
    code = "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')\n"
    process = subprocess.Popen(
        [*BAI, "run", "python", "-c", code],
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        seen_first = time.monotonic()
        rest, errors = process.communicate(timeout=60)
        finished = time.monotonic()
    finally:
        process.kill()
    assert first == "first\n", errors
    assert rest == "second\n"
    assert finished - seen_first > 2.0, "the first line came only at the end of the run"
    assert process.returncode == 0


def test_ctrl_c_interrupts_the_run_and_exits_130(server: Any, name: str) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('not reached')\n"
    process = subprocess.Popen(
        [*BAI, "run", "python", "-c", code, "--name", name],
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "started\n"
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "not reached" not in rest
    after = bai(server, "run", "python", "-c", "print('still here')", "--name", name)
    assert (after.returncode, after.stdout) == (0, "still here\n"), after.stderr


def test_an_exception_prints_its_traceback_and_exits_1(server: Any) -> None:
    result = bai(server, "run", "python", "-c", "def f():\n    raise ValueError('boom')\nf()\n")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "ValueError: boom" in result.stderr
    assert "error:" not in result.stderr
    assert result.stdout == ""


def test_the_exit_status_is_the_codes(server: Any) -> None:
    result = bai(server, "run", "python", "-c", "import sys\nprint('bye')\nsys.exit(3)")
    assert (result.returncode, result.stdout) == (3, "bye\n")


def test_input_is_read_from_stdin(server: Any) -> None:
    code = "name = input('who? ')\nage = input()\nprint('hi', name, age)\n"
    result = bai(server, "run", "python", "-c", code, stdin="bob\n42\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "who? hi bob 42\n"


def test_env_and_resources_reach_the_session(server: Any) -> None:
    code = "import os\nprint(os.environ['GREETING'])"
    result = bai(server, "run", "python", "-c", code, "--env", "GREETING=hello there", "-r", "cpu=1", "-r", "mem=256m")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello there\n"


def test_rm_and_stats_destroy_the_session_and_print_its_usage(server: Any, name: str) -> None:
    result = bai(server, "run", "python", "-c", "print(sum(range(10**6)))", "--name", name, "--rm", "--stats")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "499999500000\n"
    assert "CPU time" in result.stderr
    assert "memory peak" in result.stderr
    gone = bai(server, "rm", name)
    assert gone.returncode == 1
    assert gone.stderr.startswith(f"error: {name}: ")


def test_stats_of_a_run_in_a_kept_session_are_one_line(server: Any, name: str) -> None:
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\nprint('ok')"
    result = bai(server, "run", "python", "-c", code, "--name", name, "--stats")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    line = re.fullmatch(r"run: cpu (\d+) ms, memory peak ([\d.]+) MiB, wall (\d+) ms\n", result.stderr)
    assert line is not None, result.stderr
    assert int(line[1]) >= 300 and float(line[2]) > 0 and int(line[3]) >= 300


def test_an_unknown_image_is_one_error_line(server: Any) -> None:
    result = bai(server, "run", "no-such-image-xyz", "-c", "1")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_limits_are_set_per_session(server: Any) -> None:
    slow = bai(server, "run", "python", "-c", "import time; time.sleep(20)", "-l", "execTimeout=1")
    assert slow.returncode == 124, slow.stderr
    assert "time limit" in slow.stderr
    flood = bai(server, "run", "python", "-c", "print('x' * 300000)", "--limit", "output=64k")
    assert flood.returncode == 0, flood.stderr
    assert len(flood.stdout) <= 64 * 1024 and "output truncated" in flood.stderr
    typo = bai(server, "run", "python", "-c", "1", "-l", "exectimeout=1")
    assert typo.returncode == 2 and "unknown limit exectimeout" in typo.stderr


def test_files_run_in_batch_mode(server: Any, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "main.c").write_text('#include "src/util.h"\nint main(void) { return greet("batch"); }\n')
    (tmp_path / "src" / "util.h").write_text("int greet(const char *who);\n")
    (tmp_path / "src" / "util.c").write_text(
        '#include <stdio.h>\nint greet(const char *who) { printf("hello, %s\\n", who); return 3; }\n'
    )
    files = ["main.c", "src/util.h", "src/util.c"]
    done = bai(server, "run", "c", *[str(tmp_path / f) for f in files], "--basedir", str(tmp_path),
               "--build", "gcc -o main main.c src/util.c")  # fmt: skip
    assert done.stdout == "hello, batch\n", done.stderr
    assert done.returncode == 3  # the exec step's exit code
    assert "uploaded 3 file(s)" in done.stderr and "src/util.c" in done.stderr

    broken = tmp_path / "main.py"
    broken.write_text("print('from the file')\n")
    defaults = bai(server, "run", "python", str(broken), "--batch", "--basedir", str(tmp_path))
    assert (defaults.returncode, defaults.stdout) == (0, "from the file\n"), defaults.stderr

    failing = bai(server, "run", "c", str(tmp_path / "main.c"), "--basedir", str(tmp_path), "--build", "exit 7")
    assert failing.returncode == 7 and "build step exited with 7" in failing.stderr, failing.stderr
    mixed = bai(server, "run", "c", "-c", "int main(){}", "--build", "make")
    assert mixed.returncode == 2 and "batch mode runs FILEs" in mixed.stderr
