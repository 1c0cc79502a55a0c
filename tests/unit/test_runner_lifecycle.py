"""The runner around the user's code: interrupts, crashes and restarts, shutdown, bad
frames, and what the user's code can do to the runner. Under each interpreter."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest
from runner_client import SRC, RunnerClient, interpreters
from runner_fixtures import GRACE, python, runner

from bai.runner.protocol import (
    HEADER,
    Configure,
    Configured,
    Execute,
    Failure,
    Finished,
    Interrupt,
    Ready,
    WaitingInput,
    encode,
)
from tests.capabilities import require_or_skip
from tests.waiting import wait_for

__all__ = ["python", "runner"]  # fixtures, from runner_fixtures


def _interrupt_once_started(runner: RunnerClient, code: str) -> Finished:
    run_id = runner.start_run("print('started', flush=True)\n" + code)
    runner.wait_output("started")
    runner.send(Interrupt())
    return runner.collect(run_id, timeout=10).finished


@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(100)"], ids=["busy", "sleep"])
def test_interrupt_raises_keyboard_interrupt_and_keeps_state(runner: RunnerClient, code: str) -> None:
    runner.run("kept = 1")
    run_id = runner.start_run("print('started', flush=True)\n" + code)
    runner.wait_output("started")
    runner.send(Interrupt())
    result = runner.collect(run_id, timeout=10)
    assert result.exit_code == 1
    assert not result.finished.engine_restarted
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    assert result.stderr.endswith("KeyboardInterrupt\n")
    assert "bai" not in result.stderr
    assert runner.run("print(kept)").stdout == "1\n"


def test_an_interrupt_right_after_execute_interrupts_the_run(runner: RunnerClient) -> None:
    """The SIGINT reaches the REPL before the run's code runs (while it reads or compiles
    the cell, or, just started, before it handles SIGINT at all): the run is interrupted
    as it starts, not left to the grace's kill."""
    runner.run("kept = 1")
    for attempt in range(5):  # each time, the runner reads both frames and signals at once
        _interrupt_at_once(runner, f"at-once-{attempt}")
    assert runner.run("print(kept)").stdout == "1\n"
    assert runner.run("import os\nos._exit(3)").finished.engine_restarted  # a fresh REPL starts now
    _interrupt_at_once(runner, "at-once-fresh")


def _interrupt_at_once(runner: RunnerClient, run_id: str) -> None:
    runner.start_run("import time\nwhile True: time.sleep(0.05)", run_id=run_id)
    runner.send(Interrupt())
    result = runner.collect(run_id, timeout=10)
    assert not result.finished.engine_restarted, result.stderr
    assert result.exit_code == 1 and result.stderr.endswith("KeyboardInterrupt\n")


def test_interrupt_reaches_the_users_subprocesses(runner: RunnerClient) -> None:
    finished = _interrupt_once_started(runner, "import subprocess\nsubprocess.run(['sleep', '100'])")
    assert finished.exit_code == 1 and not finished.engine_restarted


def test_interrupt_while_waiting_for_input(runner: RunnerClient) -> None:
    finished = _interrupt_once_started(runner, "input('? ')")
    assert finished.exit_code == 1 and not finished.engine_restarted
    runner.send(Execute(run_id="after", code="1"))
    assert runner.collect("after").stdout == "1\n"


def test_interrupt_of_code_that_ignores_sigint_restarts_the_engine(runner: RunnerClient) -> None:
    runner.run("kept = 1")
    run_id = runner.start_run(
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('started')\ntime.sleep(100)"
    )
    runner.wait_output("started")
    interrupted = time.monotonic()
    runner.send(Interrupt())
    result = runner.collect(run_id, timeout=10)  # long before the 100 s sleep could end
    assert time.monotonic() - interrupted >= GRACE  # the grace was given, however busy the host
    assert result.finished.engine_restarted
    assert result.exit_code == 128 + signal.SIGKILL
    assert "did not stop within 0.5 s of the interrupt" in result.stderr
    after = runner.run("print('fresh')\nkept")
    assert after.stdout == "fresh\n" and "NameError" in after.stderr


def test_interrupt_when_idle_is_harmless(runner: RunnerClient) -> None:
    runner.send(Interrupt())
    assert runner.run("1").stdout == "1\n"


@pytest.mark.parametrize(
    ("code", "exit_code", "words"),
    [
        ("import os\nos._exit(7)", 7, "exited with status 7"),
        ("import os\nos.kill(os.getpid(), 9)", 137, "killed by signal 9"),
        ("import ctypes\nctypes.string_at(0)", 139, "killed by signal 11"),
    ],
    ids=["exit", "sigkill", "segfault"],
)
def test_a_dying_repl_is_reported_and_replaced(
    runner: RunnerClient, code: str, exit_code: int, words: str
) -> None:
    runner.run("kept = 1")
    result = runner.run("print('before')\n" + code)
    assert result.finished.engine_restarted
    assert result.exit_code == exit_code
    assert result.stdout == "before\n"
    assert f"the Python process died: {words}" in result.stderr
    after = runner.run("print('fresh')\nkept")
    assert after.stdout == "fresh\n" and "NameError" in after.stderr
    assert not after.finished.engine_restarted


def test_a_repl_killed_between_runs_is_replaced_quietly(runner: RunnerClient) -> None:
    pid = int(runner.run("import os\nos.getpid()").stdout)
    os.kill(pid, signal.SIGKILL)
    assert _reaped(pid), "the runner did not reap its killed REPL"  # it has seen the death
    result = runner.run("print('fresh')")
    assert (result.stdout, result.stderr, result.finished.engine_restarted) == ("fresh\n", "", False)


def test_a_repl_that_closes_its_control_channel_is_replaced(runner: RunnerClient) -> None:
    result = runner.run(
        "import os\nfor fd in range(3, 20):\n    try:\n        os.close(fd)\n"
        "    except OSError:\n        pass"
    )
    assert result.finished.engine_restarted
    assert runner.run("'ok'").stdout == "'ok'\n"


def test_the_users_fork_does_not_confuse_the_runner(runner: RunnerClient) -> None:
    result = runner.run(
        "import os\npid = os.fork()\nif pid == 0:\n    print('child')\n"
        "else:\n    os.waitpid(pid, 0)\n    print('parent')"
    )
    assert sorted(result.stdout.splitlines()) == ["child", "parent"]
    assert result.exit_code == 0 and not result.finished.engine_restarted
    assert runner.run("pid > 0").stdout == "True\n"


def test_shutdown_kills_the_users_processes_and_exits_zero(runner: RunnerClient) -> None:
    pid = int(runner.run("import subprocess\np = subprocess.Popen(['sleep', '100'])\np.pid").stdout)
    assert runner.close() == 0
    assert _gone(pid)


def test_socket_eof_ends_the_runner(runner: RunnerClient) -> None:
    runner.sock.shutdown(socket.SHUT_WR)
    assert runner.proc.wait(10) == 0


def test_a_malformed_frame_is_answered_and_the_runner_goes_on(runner: RunnerClient) -> None:
    for payload in (
        b"not json",
        b"[1]",
        b'{"type": "bogus"}',
        b'{"type": "execute", "run_id": "x", "cod": "1"}',
    ):
        runner.send_raw(HEADER.pack(len(payload)) + payload)
        assert "malformed frame" in runner.expect(Failure).message
    runner.send_raw(encode(Ready(engine="python", language_version="0")))
    assert "does not take" in runner.expect(Failure).message
    runner.send_raw(encode(Execute(run_id="m", code="2 * 21", mode="bogus")))
    assert runner.expect(Failure).run_id == "m"
    assert runner.run("2 * 21").stdout == "42\n"


def test_the_runner_is_not_dumpable_but_the_repl_is(python: str, tmp_path: Path) -> None:
    """The files of a non-dumpable process under /proc/<pid> belong to root (so, as root,
    the runner runs as nobody here)."""
    user = 65534 if os.geteuid() == 0 else None
    if user is not None and os.path.realpath(python).startswith("/root/"):
        require_or_skip("platform", "nobody cannot run an interpreter under /root")
    # a copy of the runner nobody can read, wherever the checkout lives (CI clones into 0700 dirs)
    src = Path(tempfile.mkdtemp(prefix="bai-runner-"))
    src.chmod(0o755)
    shutil.copytree(SRC / "bai" / "runner", src / "bai" / "runner",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in src.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        _check_not_dumpable(python, user, src)
    finally:
        shutil.rmtree(src)


def _check_not_dumpable(python: str, user: int | None, src: Path) -> None:
    with RunnerClient.start(python, os.devnull, cwd="/", user=user, src=src) as runner:
        repl_pid = int(runner.run("import os\nos.getpid()").stdout)
        runner_owner = os.stat(f"/proc/{runner.proc.pid}/status").st_uid
        repl_owner = os.stat(f"/proc/{repl_pid}/status").st_uid
        uid = os.getuid() if user is None else user
        assert (runner_owner, repl_owner) == (0, uid)
        # nor can the user's code write to the runner's memory
        result = runner.run(
            "import os\ntry:\n    open('/proc/%d/mem' % os.getppid(), 'wb')\n"
            "except OSError as e:\n    print(type(e).__name__)"
        )
        assert result.stdout == "PermissionError\n"


def test_a_restarted_repl_gets_the_runners_first_oom_score(runner: RunnerClient) -> None:
    """The agent gives the runner oom_score_adj -1000 after Ready (that needs a privilege
    this test may lack: 500 stands in for it); a REPL forked later must not inherit it."""
    try:
        with open(f"/proc/{runner.proc.pid}/oom_score_adj", "w") as f:
            f.write("500")
    except PermissionError:
        require_or_skip("platform", "cannot change the runner's oom_score_adj here")
    assert runner.run("import os\nos._exit(1)").finished.engine_restarted
    assert runner.run("open('/proc/self/oom_score_adj').read()").stdout == "'0\\n'\n"


def _reaped(pid: int) -> bool:
    """Once ``pid`` has left the process table (a zombie is not enough: its parent, the
    runner, has to have collected it); fails the test if it does not."""
    return wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what=f"pid {pid} reaped")


def _appeared(path: Path) -> bool:
    return wait_for(path.exists, what=f"{path} to appear")


def _dead(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _gone(pid: int) -> bool:
    return wait_for(lambda: _dead(pid), what=f"pid {pid} to end")


def test_interpreter_list_includes_this_one() -> None:
    assert any(path == sys.executable for _, path in interpreters())


def test_a_sigint_between_runs_does_not_kill_the_repl(runner: RunnerClient, tmp_path: Path) -> None:
    """The user's handler raises KeyboardInterrupt, as Python's default one does; it marks
    the file (the REPL's cwd is tmp_path) first, so the test knows the signal was handled
    between the runs and not at the start of the next one."""
    pid = int(runner.run(
        "import os, signal\ndef on_sigint(signum, frame):\n    open('sigint-seen', 'w').close()\n"
        "    raise KeyboardInterrupt\nsignal.signal(signal.SIGINT, on_sigint)\nkept = 1\nos.getpid()"
    ).stdout)
    os.kill(pid, signal.SIGINT)  # the run has finished: the REPL is between runs
    assert _appeared(tmp_path / "sigint-seen"), "the REPL did not handle the SIGINT"
    result = runner.run("kept")
    assert (result.stdout, result.finished.engine_restarted) == ("1\n", False)


def test_strings_utf8_cannot_carry_do_not_break_the_runner(runner: RunnerClient) -> None:
    run_id = runner.start_run("x = input('\\udcff? ')\nprint(len(x))")
    seen = runner.wait_output("? ")
    waiting = runner.expect(WaitingInput)
    assert waiting.prompt == "?? " and seen[-1].data.endswith("? ")
    payload = json.dumps({"type": "input", "run_id": run_id, "text": "\udc80"}).encode()  # ASCII escapes
    runner.send_raw(HEADER.pack(len(payload)) + payload)
    assert runner.collect(run_id).stdout.endswith("1\n")
    assert runner.run("'\\udcff'").stdout == "'\\udcff'\n"


def test_the_runner_ignores_sigint_from_the_users_code(runner: RunnerClient) -> None:
    # kill() queues the signal before it returns, so the runner has it before it can
    # read the end of this run; a runner that died of it could not answer the next one
    runner.run("import os, signal\nos.kill(os.getppid(), signal.SIGINT)")
    assert runner.run("1").stdout == "1\n"
    assert runner.proc.poll() is None


def test_configure_sets_the_environment_of_the_repl_and_of_a_restarted_one(runner: RunnerClient) -> None:
    runner.send(Configure(environ={"BAI_POOL_T": "x y", "HOME": "/home/work"}))
    runner.expect(Configured)
    code = "import os, subprocess\nprint(os.environ['BAI_POOL_T'])\n"
    code += "print(subprocess.run(['sh', '-c', 'echo $BAI_POOL_T'], capture_output=True, text=True).stdout, end='')"
    assert runner.run(code).stdout == "x y\nx y\n"
    crashed = runner.run("import os; os._exit(3)")
    assert crashed.finished.engine_restarted
    assert runner.run("import os; print(os.environ['BAI_POOL_T'])").stdout == "x y\n"


#: What the runner's start must not import (each costs a millisecond or more, at every
#: session start): the REPL child is forked from the runner, so it holds what the runner did.
COSTLY_MODULES = ("typing", "dataclasses", "inspect", "ast", "platform", "socket", "selectors", "threading")


def test_the_runner_starts_without_its_costly_modules(runner: RunnerClient) -> None:
    code = f"import sys\nsorted(name for name in {COSTLY_MODULES!r} if name in sys.modules)"
    assert runner.run(code).stdout == "[]\n"


@pytest.mark.parametrize("boot_prefix", ["", "import gc; gc.disable(); "])
def test_the_repl_collects_garbage_whatever_the_boot_line_did(python: str, tmp_path: Path, boot_prefix: str) -> None:
    """The runner freezes the objects of its imports before it forks the REPL (shared
    pages stay shared) and turns the collector on, which a boot line may have turned off."""
    with RunnerClient.start(python, tmp_path / "runner.log", boot_prefix=boot_prefix) as runner:
        code = (
            "import gc, weakref\nclass Cycle: pass\nc = Cycle(); c.me = c; alive = weakref.ref(c); del c\n"
            "gc.collect()\nprint(gc.isenabled(), alive() is None, gc.get_freeze_count() > 0)"
        )
        assert runner.run(code).stdout == "True True True\n"
        assert runner.close() == 0
