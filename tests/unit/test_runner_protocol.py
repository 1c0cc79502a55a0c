"""protocol.decode checks each field's value against its annotation (a frame may come
from a compromised sandbox), and a Ready's protocol version before anything else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bai.runner import protocol as p


def frame(**body: Any) -> bytes:
    return json.dumps(body).encode()


def test_every_message_field_has_a_type_check() -> None:
    """A field whose annotation has no check fails here, not on the first frame."""
    for cls in p.MESSAGE_TYPES.values():
        assert [name for name, _, _ in p.field_checks(cls)] == list(cls._FIELDS)


EXAMPLES = [
    p.Execute(run_id="r", code="print(1)", mode="batch", steps=[["build", "make"], ["exec", "./a"]], build_log=True),
    p.Configure(environ={"A": "1", "B": "é"}),
    p.Complete(code="imp", line="imp", row=0, col=3),
    p.Ready(engine="python", language_version="3.11.2"),
    p.Finished(run_id="r", exit_code=-9, wall_ms=12.5, engine_restarted=True),
    p.Finished(run_id="r", exit_code=p.INT_MAX, wall_ms=0),
    p.Completions(items=["import", "input"]),
    p.Failure(message="busy", run_id=None),
    p.Failure(message="busy", run_id="r"),
    p.PtyClosed(pty_id="t", exit_code=0, message=""),
    p.Output(run_id="r", stream="stdout", data="日本語\n"),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda message: message.TYPE)
def test_well_typed_messages_round_trip(message: p.Message) -> None:
    assert p.decode(p.encode(message)[p.HEADER.size :]) == message


REFUSED = {
    "str for int": (dict(type="finished", run_id="r", exit_code="0"), "field 'exit_code' of finished is not int"),
    "bool for int": (dict(type="finished", run_id="r", exit_code=False), "is not int: bool False"),
    "huge int": (dict(type="finished", run_id="r", exit_code=10**30), "an int of 100 bits"),
    "float for int": (dict(type="pty-ack", pty_id="t", size=1.5), "field 'size' of pty-ack is not int"),
    "nan": (dict(type="finished", run_id="r", exit_code=0, wall_ms=float("nan")), "is not float"),
    "bool for float": (dict(type="finished", run_id="r", exit_code=0, wall_ms=True), "is not float"),
    "int for bool": (dict(type="finished", run_id="r", exit_code=0, engine_restarted=1), "is not bool"),
    "list for str": (dict(type="output", run_id="r", stream=["stdout"], data=""), "is not str: list"),
    "list for dict": (dict(type="configure", environ=[["A", "1"]]), "is not Dict[str, str]"),
    "int in a dict": (dict(type="configure", environ={"A": 1}), "is not Dict[str, str]"),
    "flat steps": (dict(type="execute", run_id="r", code="", steps=["make"]), "is not List[List[str]]"),
    "surrogate": (dict(type="output", run_id="r", stream="stdout", data="\udcff"), "field 'data' of output is not str"),
    "missing field": (dict(type="input", run_id="r"), "missing required argument(s): text"),
    "extra field": (dict(type="interrupt", signal=9), "unknown fields for interrupt: ['signal']"),
}


@pytest.mark.parametrize(("body", "error"), REFUSED.values(), ids=REFUSED.keys())
def test_a_field_of_the_wrong_type_is_a_protocol_error(body: dict[str, Any], error: str) -> None:
    with pytest.raises(p.ProtocolError) as refused:
        p.decode(frame(**body))
    assert error in str(refused.value)
    assert not isinstance(refused.value, p.VersionMismatch)


def test_an_optional_field_takes_null_and_its_type_only() -> None:
    assert p.decode(frame(type="failure", message="m", run_id=None)) == p.Failure(message="m")
    with pytest.raises(p.ProtocolError, match="is not Optional"):
        p.decode(frame(type="failure", message="m", run_id=3))


def test_the_agents_messages_may_carry_lone_surrogates_a_runners_may_not() -> None:
    """What a user typed travels to the runner as it is; the agent passes a runner's
    strings on in JSON to its clients, which UTF-8 cannot carry a surrogate in."""
    assert p.decode(frame(type="input", run_id="r", text="\udcff")) == p.Input(run_id="r", text="\udcff")
    with pytest.raises(p.ProtocolError, match="field 'prompt' of waiting-input is not str"):
        p.decode(frame(type="waiting-input", run_id="r", prompt="\udcff"))


def test_json_nested_past_the_recursion_limit_is_a_protocol_error() -> None:
    with pytest.raises(p.ProtocolError, match="not UTF-8 JSON"):
        p.decode(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(
    ("announced", "said"),
    [
        (p.PROTOCOL_VERSION + 1, f"the runner speaks protocol version {p.PROTOCOL_VERSION + 1}; this agent speaks"),
        (p.PROTOCOL_VERSION - 1, f"the runner speaks protocol version {p.PROTOCOL_VERSION - 1}; "),
        (0, "the runner speaks protocol version 0; "),
        ("1", "the runner announces no protocol version we can read (str '1')"),
        (1.0, "the runner announces no protocol version we can read (float 1.0)"),
        (True, "the runner announces no protocol version we can read (bool True)"),
    ],
)
def test_a_ready_of_another_version_is_a_version_mismatch(announced: Any, said: str) -> None:
    with pytest.raises(p.VersionMismatch) as refused:
        p.decode(frame(type="ready", engine="python", language_version="3", protocol=announced))
    assert said in str(refused.value)


def test_a_ready_without_a_version_or_with_unknown_fields_is_judged_by_its_version() -> None:
    with pytest.raises(p.VersionMismatch, match="no protocol version"):
        p.decode(frame(type="ready", engine="python", language_version="3"))
    with pytest.raises(p.VersionMismatch, match="version 3;"):
        p.decode(frame(type="ready", engine="python", language_version="3", protocol=3, arch="riscv"))


def test_the_frame_buffer_gives_the_frames_before_a_bad_one_and_its_error() -> None:
    buffer = p.FrameBuffer()
    good = p.encode(p.Output(run_id="r", stream="stdout", data="x"))
    bad = frame(type="finished", run_id="r", exit_code="0")
    messages, error = buffer.feed(good + p.HEADER.pack(len(bad)) + bad + good)
    assert messages == [p.Output(run_id="r", stream="stdout", data="x")]
    assert isinstance(error, p.ProtocolError) and "exit_code" in str(error)
    messages, error = p.FrameBuffer().feed(p.HEADER.pack(p.MAX_FRAME + 1))
    assert messages == [] and error is not None and "over the limit" in str(error)
