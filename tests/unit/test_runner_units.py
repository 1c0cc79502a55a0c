"""The runner's I/O-free parts, in-process: framing, control messages, argument parsing,
completion text, the between-runs backlog, wait statuses, cell compilation, records."""

from __future__ import annotations

import os
import platform
import signal
import sys
from collections.abc import Callable

import pytest
import runner_client  # noqa: F401  (puts src/ on sys.path for a bare pytest run)

from bai.runner.control import AskInput, InputGiven, RunCode, decode_control
from bai.runner.engines.python import Backlog, completion_text, python_version
from bai.runner.frames import FrameSplitter
from bai.runner.loop import Timer
from bai.runner.main import Options, parse_args
from bai.runner.process import describe_exit
from bai.runner.protocol import (
    HEADER,
    MAX_FRAME,
    Complete,
    Completions,
    Configure,
    Execute,
    Failure,
    Finished,
    Interrupt,
    ProtocolError,
    Record,
    decode,
    encode,
)
from bai.runner.repl import RUNNER_ROOT, compile_cell, format_exception, user_sys_path


def test_frames_split_across_reads_and_one_bad_frame_costs_only_itself() -> None:
    good = encode(Execute(run_id="a", code="1"))
    bad = HEADER.pack(3) + b"xyz"
    stream = good + bad + good
    splitter = FrameSplitter()
    payloads: list[bytes] = []
    for i in range(len(stream)):
        got, error = splitter.feed(stream[i : i + 1])
        assert error is None
        payloads += got
    assert len(payloads) == 3
    assert decode(payloads[0]) == decode(payloads[2]) == Execute(run_id="a", code="1")
    with pytest.raises(ProtocolError):
        decode(payloads[1])


def test_an_oversized_frame_drops_the_buffer() -> None:
    splitter = FrameSplitter()
    good = encode(Execute(run_id="a", code="1"))
    payloads, error = splitter.feed(good + HEADER.pack(MAX_FRAME + 1) + b"junk")
    assert len(payloads) == 1 and error is not None and "over the limit" in error
    assert splitter.feed(good) == ([good[HEADER.size :]], None)


def test_control_messages_round_trip_and_reject_garbage() -> None:
    for message in (RunCode("x = 1"), AskInput(3, "? ", True), InputGiven(3, "é", eof=False)):
        assert decode_control(encode(message)[HEADER.size :]) == message
    for payload in (b"\xff", b"[]", b"{}", b'{"type": "nope"}', b'{"type": "run", "code": 1, "x": 2}'):
        with pytest.raises(ProtocolError):
            decode_control(payload)


def test_parse_args() -> None:
    assert parse_args(["--fd", "3", "--engine", "python"]) == Options(fd=3, engine="python")
    assert parse_args(["--fd=5", "--interrupt-grace", "0.5"]) == Options(fd=5, interrupt_grace=0.5)
    for argv in ([], ["--fd"], ["--fd", "x"], ["--fd", "3", "--engine", "cobol"], ["--fd", "3", "--verbose"]):
        with pytest.raises(SystemExit):
            parse_args(argv)


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (Complete(code="x = my_va"), "my_va"),
        (Complete(code="import os\nos.pa"), "os.pa"),
        (Complete(code="a\nfoo.ba + 1", row=1, col=6), "foo.ba"),
        (Complete(code="ignored", line="print(sys.ar"), "sys.ar"),
        (Complete(code="x + "), ""),
        (Complete(code=""), ""),
    ],
)
def test_completion_text(message: Complete, text: str) -> None:
    assert completion_text(message) == text


def test_backlog_keeps_order_up_to_its_limit() -> None:
    backlog = Backlog(limit=10)
    backlog.add("stdout", "abc")
    backlog.add("stderr", "def")
    backlog.add("stdout", "toolongtext")
    chunks = backlog.take()
    assert chunks[:2] == [("stdout", "abc"), ("stderr", "def")]
    assert chunks[2][0] == "stderr" and "11 characters" in chunks[2][1]
    assert backlog.take() == []


def test_describe_exit() -> None:
    assert describe_exit(7 << 8) == (7, "exited with status 7")
    assert describe_exit(signal.SIGKILL) == (137, "killed by signal 9 (SIGKILL)")


def test_compile_cell_displays_only_a_trailing_expression() -> None:
    assert [c.co_filename for c in compile_cell("x = 1\nx", "<t>", 0)] == ["<t>", "<t>"]
    assert len(compile_cell("x = 1", "<t>", 0)) == 1
    assert len(compile_cell("x", "<t>", 0)) == 1
    assert len(compile_cell("x = 1\nx", "<t>", 0, script=True)) == 1  # a file's: its last value not shown
    # the runner's own `from __future__ import annotations` does not leak into the user's code
    namespace: dict[str, object] = {}
    for code in compile_cell("def f(a: int): pass\nann = f.__annotations__", "<t>", 0):
        exec(code, namespace)
    assert namespace["ann"] == {"a": int}


def test_format_exception_hides_runner_frames() -> None:
    try:
        compile_cell("1 +", "<t>", 0)
    except SyntaxError as exc:
        text = format_exception(exc)
    assert "test_runner_units.py" in text and "SyntaxError" in text
    assert os.path.join("bai", "runner") not in text


def test_user_sys_path_starts_with_cwd_and_drops_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/extra/one" + os.pathsep + "/extra/two")
    path = user_sys_path([RUNNER_ROOT, *sys.path[1:]])
    assert path[:3] == ["", "/extra/one", "/extra/two"]
    assert RUNNER_ROOT not in path


def test_records_construct_compare_and_print_as_dataclasses_did() -> None:
    assert Execute("a", "1") == Execute(run_id="a", code="1", mode="query")
    assert Execute("a", "1") != Execute("a", "2") and Execute("a", "1") != RunCode("1")
    assert repr(Execute("a", "1")) == (
        "Execute(run_id='a', code='1', mode='query', source='', steps=[], build_log=False, script=False)"
    )
    assert repr(Interrupt()) == "Interrupt()" and Interrupt() == Interrupt()
    first, second = Completions(), Completions()
    assert first.items == [] and first.items is not second.items  # a fresh default per record
    assert Configure().environ == {} and Configure().environ is not Configure().environ
    assert Finished("r", 0).as_dict() == {"run_id": "r", "exit_code": 0, "wall_ms": 0.0, "engine_restarted": False}
    assert Options(3) == Options(fd=3, engine="python", interrupt_grace=2.0)
    with pytest.raises(TypeError):
        hash(Execute("a", "1"))  # mutable and compared by value, as a dataclass
    with pytest.raises(AttributeError):
        Execute("a", "1").extra = 1  # type: ignore[attr-defined]  # slots: no stray attributes
    makers: list[Callable[[], object]] = [
        lambda: Execute("a"),  # type: ignore[call-arg]
        lambda: Execute("a", "1", "query", "x", [], False, False, "extra"),  # type: ignore[call-arg]
        lambda: Execute("a", run_id="b", code="1"),  # type: ignore[misc]
        lambda: Execute(run_id="a", code="1", colour="red"),  # type: ignore[call-arg]
    ]
    for make in makers:
        with pytest.raises(TypeError):
            make()


def test_a_field_without_a_default_cannot_follow_one_with_a_default() -> None:
    with pytest.raises(TypeError, match="without a default"):

        class Bad(Record):
            first: int = 0
            second: int  # type: ignore[misc]


def test_the_wire_format_is_unchanged() -> None:
    """Fields in declaration order, then the type; compact UTF-8 JSON (what
    dataclasses.asdict and json.dumps made before the records were plain classes)."""
    payload = (
        b'{"run_id":"a","code":"\xc3\xa9","mode":"query","source":"","steps":[],'
        + b'"build_log":false,"script":false,"type":"execute"}'
    )
    assert encode(Execute(run_id="a", code="é")) == HEADER.pack(len(payload)) + payload
    assert encode(Failure(message="m"))[HEADER.size :] == b'{"message":"m","run_id":null,"type":"failure"}'
    assert decode(b'{"type":"failure","message":"m"}') == Failure(message="m")


@pytest.mark.parametrize("payload", [b'{"type": []}', b'{"type": {}}', b'{"type": 1}', b'{"run_id": "a"}'])
def test_a_frame_whose_type_is_not_a_string_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode(payload)


def test_python_version_is_platforms() -> None:
    assert python_version() == platform.python_version()


def test_timers_order_by_time_then_sequence() -> None:
    timers = [Timer(2.0, 1, lambda: None), Timer(1.0, 3, lambda: None), Timer(1.0, 2, lambda: None)]
    assert [(t.when, t.seq) for t in sorted(timers)] == [(1.0, 2), (1.0, 3), (2.0, 1)]


def test_preload_imports_and_reports_failures(capsys: pytest.CaptureFixture[str]) -> None:
    from bai.runner.main import parse_args, preload

    assert parse_args(["--fd", "3", "--preload", "json,re"]).preload == "json,re"
    assert parse_args(["--fd", "3"]).preload == ""
    assert preload("json, colorsys,,no_such_module_here") == ["no_such_module_here"]
    assert "cannot preload no_such_module_here" in capsys.readouterr().err
    assert "colorsys" in sys.modules
