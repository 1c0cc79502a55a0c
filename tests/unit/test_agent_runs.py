"""The run core (bai.agent.runs), with no event loop: statuses, run ids, merging, caps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bai.agent.runs import RunBook, new_run_id
from bai.common.errors import InvalidRequest


def test_query_assigns_a_run_id_when_none_given() -> None:
    book = RunBook()
    run = book.start(None)
    assert len(run.run_id) == 32 and int(run.run_id, 16) >= 0
    assert new_run_id() != new_run_id()


def test_query_keeps_the_clients_run_id() -> None:
    assert RunBook().start("abc").run_id == "abc"


def test_finished_run_reports_exit_code_and_merged_console() -> None:
    book = RunBook()
    book.start("r1")
    book.on_output("r1", "stdout", "a")
    book.on_output("r1", "stdout", "b")
    book.on_output("r1", "stderr", "E")
    book.on_output("r1", "stdout", "c")
    assert not book.deliverable
    book.on_finished("r1", 0)
    assert book.deliverable
    response = book.take_response()
    assert (response.run_id, response.status, response.exit_code) == ("r1", "finished", 0)
    assert response.console == [("stdout", "ab"), ("stderr", "E"), ("stdout", "c")]
    assert book.backlog_bytes == 0


def test_output_so_far_is_continued_then_the_rest_finishes() -> None:
    book = RunBook()
    book.start("r1")
    book.on_output("r1", "stdout", "0\n")
    first = book.take_response()
    assert (first.status, first.exit_code, first.console) == ("continued", None, [("stdout", "0\n")])
    book.check_continue("r1")
    book.on_output("r1", "stdout", "1\n")
    book.on_finished("r1", 3)
    second = book.take_response()
    assert (second.status, second.exit_code, second.console) == ("finished", 3, [("stdout", "1\n")])


def test_a_new_query_is_refused_while_a_run_is_in_progress() -> None:
    book = RunBook()
    book.start("r1")
    with pytest.raises(InvalidRequest) as caught:
        book.start("r2")
    assert caught.value.field == "runId"
    book.on_finished("r1", 0)
    assert book.start("r2").run_id == "r2"


def test_continue_needs_the_current_run_id() -> None:
    book = RunBook()
    with pytest.raises(InvalidRequest):
        book.check_continue("nope")
    book.start("r1")
    with pytest.raises(InvalidRequest) as caught:
        book.check_continue("r2")
    assert caught.value.field == "runId"
    assert book.check_continue("r1").run_id == "r1"
    assert book.check_continue(None).run_id == "r1"
    book.on_finished("r1", 0)
    assert book.check_continue("r1").run_id == "r1"  # the just-finished run


def test_input_round_trip() -> None:
    book = RunBook()
    book.start("r1")
    with pytest.raises(InvalidRequest):
        book.check_input("r1")  # not waiting yet
    book.on_output("r1", "stdout", "name? ")
    book.on_waiting_input("r1", password=True)
    assert book.deliverable
    waiting = book.take_response()
    assert (waiting.status, waiting.is_password, waiting.console) == (
        "waiting-input",
        True,
        [("stdout", "name? ")],
    )
    assert not book.deliverable  # reported once
    book.check_input("r1")
    with pytest.raises(InvalidRequest):
        book.check_input("r1")  # answered already
    book.on_output("r1", "stdout", "hi\n")
    book.on_finished("r1", 0)
    assert book.take_response().console == [("stdout", "hi\n")]


def test_exec_timeout_status() -> None:
    book = RunBook()
    assert book.on_exec_timeout() is None
    book.start("r1")
    assert book.on_exec_timeout() is not None
    book.on_finished("r1", 1)
    assert book.take_response().status == "exec-timeout"


def test_stale_run_messages_are_dropped() -> None:
    book = RunBook()
    book.start("r1")
    book.on_output("old", "stdout", "x")
    assert not book.on_finished("old", 0)
    book.on_finished("r1", 0)
    book.on_output("r1", "stdout", "late")  # after Finished
    assert book.take_response().console == []


def test_media_and_html_entries() -> None:
    book = RunBook()
    book.start("r1")
    book.on_output("r1", "stdout", "a")
    book.on_media("r1", "image/png", "data:image/png;base64,AAAA")
    book.on_media("r1", "text/html", "<b>x</b>")
    book.on_output("r1", "stdout", "b")
    book.on_finished("r1", 0)
    assert book.take_response().console == [
        ("stdout", "a"),
        ("media", ["image/png", "data:image/png;base64,AAAA"]),
        ("html", "<b>x</b>"),
        ("stdout", "b"),
    ]


def test_each_stream_is_capped_per_response_and_the_rest_follows() -> None:
    book = RunBook(stream_cap=10)
    book.start("r1")
    book.on_output("r1", "stdout", "0123456789abcdef")
    book.on_output("r1", "stderr", "E")
    assert book.deliverable  # a full response is ready before the flush timeout
    book.on_finished("r1", 0)
    first = book.take_response()
    assert (first.status, first.console) == ("continued", [("stdout", "0123456789")])
    second = book.take_response()
    assert (second.status, second.console) == ("finished", [("stdout", "abcdef"), ("stderr", "E")])
    assert book.backlog_bytes == 0


def test_cap_counts_utf8_bytes_and_never_splits_a_character() -> None:
    book = RunBook(stream_cap=5)
    book.start("r1")
    book.on_output("r1", "stdout", "ééé")  # 6 bytes
    book.on_finished("r1", 0)
    assert book.take_response().console == [("stdout", "éé")]
    assert book.take_response().console == [("stdout", "é")]


def test_runner_gone_ends_the_run_with_the_reason() -> None:
    book = RunBook()
    book.start("r1")
    book.on_runner_gone("[bai] the sandbox exited")
    response = book.take_response()
    assert response.status == "finished" and response.exit_code == 137
    assert response.console == [("stderr", "[bai] the sandbox exited\n")]


def test_notice_after_finish_is_delivered() -> None:
    book = RunBook()
    book.start("r1")
    book.on_finished("r1", -9)
    book.add_notice("r1", "out of memory")
    assert book.take_response().console == [("stderr", "out of memory\n")]


@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), st.text(min_size=1, max_size=40))), st.integers(4, 64))
def test_capped_responses_reassemble_the_output_in_order(chunks: list[tuple[str, str]], cap: int) -> None:
    book = RunBook(stream_cap=cap)
    book.start("r")
    for stream, text in chunks:
        book.on_output("r", stream, text)
    book.on_finished("r", 0)
    got: list[tuple[str, str]] = []
    for _ in range(10_000):
        response = book.take_response()
        for kind, data in response.console:
            assert isinstance(data, str)
            assert len(data.encode("utf-8", "surrogatepass")) <= cap or len(data) == 1
            got.append((kind, data))
        if response.status == "finished":
            break
    merged: list[tuple[str, str]] = []
    for kind, data in [*chunks]:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + data)
        else:
            merged.append((kind, data))
    rejoined: list[tuple[str, str]] = []
    for kind, data in got:
        if rejoined and rejoined[-1][0] == kind:
            rejoined[-1] = (kind, rejoined[-1][1] + data)
        else:
            rejoined.append((kind, data))
    assert rejoined == merged
    assert book.backlog_bytes == 0


def test_after_an_interrupt_excess_output_is_dropped_not_paused() -> None:
    book = RunBook(stream_cap=100)
    book.start("r1")
    book.on_output("r1", "stdout", "x" * 300)
    assert book.over_backlog(200)
    book.discard_excess(200)
    assert not book.over_backlog(200)  # keep reading: the runner must hear the interrupt
    book.on_output("r1", "stdout", "y" * 50)  # over the limit: dropped
    book.on_finished("r1", 1)
    console = []
    for _ in range(10):
        response = book.take_response()
        console += response.console
        if response.status == "finished":
            break
    text = "".join(str(data) for _, data in console)
    assert text.count("x") == 300 and "yy" not in text
    assert "50 bytes of output after the interrupt were dropped" in text
