"""The run core (bai.agent.runs), with no event loop: statuses, run ids, merging, caps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bai.agent.cgroups import RunUsage
from bai.agent.runs import RunBook, format_size, new_run_id
from bai.common.agent_rpc import RunStats
from bai.common.errors import InvalidRequest
from bai.common.wire import RunResult


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


# -- the output volume limit ------------------------------------------------------------

MARKER = "[bai] output truncated: this run wrote more than {}; the rest was discarded\n"


def drain(book: RunBook) -> tuple[list[tuple[str, str]], RunResult]:
    """Every response until the run's end: the console merged, and the last response."""
    console: list[tuple[str, str]] = []
    for _ in range(10_000):
        response = book.take_response()
        for kind, data in response.console:
            assert isinstance(data, str)
            if console and console[-1][0] == kind:
                console[-1] = (kind, console[-1][1] + data)
            else:
                console.append((kind, data))
        if response.status != "continued":
            return console, response
    raise AssertionError("the run never ended")


def test_output_up_to_the_limit_is_kept_whole() -> None:
    book = RunBook(output_limit=10)
    book.start("r1")
    book.on_output("r1", "stdout", "12345")
    book.on_output("r1", "stderr", "67890")  # exactly the limit
    book.on_finished("r1", 0)
    book.record_usage("r1", None, 1.0)
    console, response = drain(book)
    assert console == [("stdout", "12345"), ("stderr", "67890")]
    assert response.stats is not None
    assert (response.stats.output_bytes, response.stats.output_truncated) == (10, False)


def test_output_past_the_limit_is_cut_with_one_marker_in_place() -> None:
    book = RunBook(output_limit=10)
    book.start("r1")
    book.on_output("r1", "stderr", "warn\n")
    book.on_output("r1", "stdout", "abcdefgh")  # 3 bytes over: "abcde" kept
    book.on_output("r1", "stdout", "more" * 1000)
    book.on_output("r1", "stderr", "late error\n")
    book.on_finished("r1", 0)
    book.record_usage("r1", None, 1.0)
    console, response = drain(book)
    # the cut line is closed before the marker, which comes right after the last kept byte
    assert console == [("stderr", "warn\n"), ("stdout", "abcde"), ("stderr", "\n" + MARKER.format("10 bytes"))]
    assert response.stats is not None
    assert response.stats.output_bytes == 5 + 8 + 4000 + 11
    assert response.stats.output_truncated


def test_truncation_never_splits_a_character_and_counts_utf8_bytes() -> None:
    book = RunBook(output_limit=5)
    book.start("r1")
    book.on_output("r1", "stdout", "éééé\n")  # 9 bytes: "éé" (4 bytes) fits, the third would not
    book.on_finished("r1", 0)
    book.record_usage("r1", None, 1.0)
    console, response = drain(book)
    assert console == [("stdout", "éé"), ("stderr", "\n" + MARKER.format("5 bytes"))]
    assert response.stats is not None and response.stats.output_bytes == 9


def test_marker_needs_no_newline_after_a_whole_line() -> None:
    book = RunBook(output_limit=2**20)
    book.start("r1")
    book.on_output("r1", "stdout", "x" * (2**20 - 1) + "\n")
    book.on_output("r1", "stdout", "y")
    book.on_finished("r1", 0)
    console, _ = drain(book)
    assert console[-1] == ("stderr", MARKER.format("1 MiB"))


def test_a_truncated_flood_neither_grows_the_backlog_nor_pauses_the_runner() -> None:
    book = RunBook(output_limit=1000)
    book.start("r1")
    book.on_output("r1", "stdout", "x" * 1000)
    book.on_output("r1", "stdout", "x")
    held = book.backlog_bytes
    for _ in range(1000):
        book.on_output("r1", "stdout", "x" * 100_000)
    assert book.backlog_bytes == held < 1200
    assert not book.over_backlog(held - 1)  # the runner is read on: what comes is dropped
    book.on_finished("r1", 0)
    book.record_usage("r1", None, 1.0)
    console, response = drain(book)
    assert "".join(data for _, data in console).count("[bai] output truncated") == 1
    assert response.stats is not None and response.stats.output_bytes == 1001 + 100_000_000


def test_a_zero_limit_keeps_nothing_but_the_marker() -> None:
    book = RunBook(output_limit=0)
    book.start("r1")
    book.on_output("r1", "stdout", "a\n")
    book.on_finished("r1", 0)
    console, _ = drain(book)
    assert console == [("stderr", MARKER.format("0 bytes"))]


def test_each_run_gets_its_own_limit_and_counts() -> None:
    book = RunBook(output_limit=4)
    book.start("r1")
    book.on_output("r1", "stdout", "123456")
    book.on_finished("r1", 0)
    drain(book)
    book.start("r2", output_limit=100)
    book.on_output("r2", "stdout", "123456")
    book.on_finished("r2", 0)
    book.record_usage("r2", None, 1.0)
    console, response = drain(book)
    assert console == [("stdout", "123456")]
    assert response.stats is not None and not response.stats.output_truncated


@given(
    st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), st.text(min_size=1, max_size=30)), max_size=20),
    st.integers(0, 200),
)
def test_truncated_output_is_the_longest_fitting_prefix(chunks: list[tuple[str, str]], limit: int) -> None:
    book = RunBook(stream_cap=16, output_limit=limit)
    book.start("r")
    for stream, text in chunks:
        book.on_output("r", stream, text)
    book.on_finished("r", 0)
    book.record_usage("r", None, 1.0)
    console, response = drain(book)
    written = "".join(text for _, text in chunks)
    size = len(written.encode())
    marker = MARKER.format(format_size(limit))
    kept = "".join(data for _, data in console).replace(marker, "")
    # the marker starts a line of its own: a newline before it is the book's when the kept
    # output left a line open (then it is not the output's, or it would not have fitted)
    if kept.endswith("\n") and (not written.startswith(kept) or len(kept.encode()) > limit):
        kept = kept[:-1]
    assert response.stats is not None
    assert response.stats.output_bytes == size
    assert response.stats.output_truncated == (size > limit)
    assert "".join(data for _, data in console).count("[bai] output truncated") == (1 if size > limit else 0)
    assert written.startswith(kept)
    assert len(kept.encode()) <= limit
    if size > limit:  # not one more character would have fitted
        assert len(written[: len(kept) + 1].encode()) > limit


def test_format_size() -> None:
    assert [format_size(n) for n in (8 * 2**20, 512 * 1024, 2**30, 1000, 0, 2**20 + 1)] == [
        "8 MiB",
        "512 KiB",
        "1 GiB",
        "1000 bytes",
        "0 bytes",
        "1048577 bytes",
    ]


# -- per-run statistics ----------------------------------------------------------------


def test_stats_come_with_finished_only() -> None:
    book = RunBook()
    book.start("r1")
    book.on_output("r1", "stdout", "name? ")
    book.on_waiting_input("r1", password=False)
    assert book.take_response().stats is None  # waiting-input
    book.check_input("r1")
    book.on_output("r1", "stdout", "x" * 10)
    assert book.take_response().stats is None  # continued
    book.record_usage("r1", RunUsage(1.0, 10, "run"), 5.0)  # not ended yet: ignored
    book.on_finished("r1", 0)
    book.record_usage("r1", RunUsage(cpu_ms=12.3456789, mem_peak=2**20, mem_peak_scope="session"), 20.0004)
    response = book.take_response()
    assert response.status == "finished"
    assert response.stats == RunStats(
        cpu_ms=12.346, wall_ms=20.0, mem_peak=2**20, mem_peak_scope="session", output_bytes=16
    )


def test_stats_of_a_timed_out_run_and_of_an_unmeasured_one() -> None:
    book = RunBook()
    book.start("r1")
    book.on_exec_timeout()
    book.on_finished("r1", 1)
    book.record_usage("r1", None, 3000.0)
    response = book.take_response()
    assert response.status == "exec-timeout"
    assert response.stats == RunStats(cpu_ms=0, wall_ms=3000.0, mem_peak=0)


def test_a_finished_run_held_back_by_the_stream_cap_reports_stats_at_its_end() -> None:
    book = RunBook(stream_cap=4)
    book.start("r1")
    book.on_output("r1", "stdout", "12345678")
    book.on_finished("r1", 0)
    book.record_usage("r1", RunUsage(1.0, 1, "run"), 1.0)
    first = book.take_response()
    assert (first.status, first.stats) == ("continued", None)
    last = book.take_response()
    assert last.status == "finished" and last.stats is not None


def test_runner_gone_names_the_run_it_ended() -> None:
    book = RunBook()
    assert book.on_runner_gone("gone") is None
    book.start("r1")
    assert book.on_runner_gone("gone") == "r1"
    assert book.on_runner_gone("gone") is None
