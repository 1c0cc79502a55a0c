"""What the agent tells the runner for each catalog entry (bai.agent.environments.launch),
how a batch run's steps show in the run book, and which agent serves an image."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bai.agent.environments import load_catalog
from bai.agent.environments.launch import JAVA_FILE_BYTES, Launch
from bai.agent.runs import RunBook
from bai.manager.scheduler import serves

CATALOG = load_catalog()


def launch(reference: str, venv: Path | None = None) -> Launch:
    return Launch(CATALOG.resolve(reference), venv)


def test_each_runtime_has_its_engine_and_a_repl_its_settings() -> None:
    assert launch("python").engine == "python" and launch("python").runner_config() == {"version": "3.11"}
    assert launch("c").engine == "command" and launch("java").engine == "command"
    lua = launch("lua")
    assert lua.engine == "repl"
    config = lua.runner_config()
    assert config["command"] == ["lua5.4", "-i"] and config["echo"] is True and "{marker}" in config["sentinel"]
    json.dumps(config)  # it travels as --config JSON
    for env in CATALOG:
        assert Launch(env, Path("/v") if env.host.venv else None).engine in ("python", "repl", "command")


def test_a_venv_entry_runs_the_runner_on_its_python_and_binds_it(tmp_path: Path) -> None:
    venv = tmp_path / "python-pytorch-2.13.abc"
    entry = launch("python-pytorch", venv)
    assert entry.runner_python("/usr/bin/python3") == f"{venv}/bin/python"
    assert entry.binds == (venv,)
    assert launch("python").runner_python("/usr/bin/python3") == "/usr/bin/python3"
    assert launch("python").binds == ()


def test_a_compiled_query_is_written_then_compiled_and_run() -> None:
    assert launch("c").query("int main(){}") == (
        "main.c",
        [["compile", "gcc -O2 -o main main.c -lm"], ["run", "./main"]],
    )
    source, steps = launch("java").query("public final class Foo { public static void main(String[] a) {} }")
    assert source == "Foo.java" and steps[-1] == ["run", "java -cp . Foo"]
    assert launch("java").query("class X {}")[0] == "Main.java"
    assert launch("python").query("print(1)") == ("", [])
    assert launch("nodejs").query("1") == ("", [])


def test_batch_defaults_come_from_the_catalog_and_a_makefile_wins(tmp_path: Path) -> None:
    c = launch("c")
    assert c.batch({"clean": "*", "build": "*", "exec": "*"}, tmp_path) == [
        ["build", "gcc -O2 -o main *.c -lm"],
        ["exec", "./main"],
    ]
    (tmp_path / "Makefile").write_text("all:\n")
    assert c.batch({"build": "*", "exec": "./run.sh"}, tmp_path) == [["build", "make"], ["exec", "./run.sh"]]
    assert c.batch({"clean": "make clean", "build": "", "exec": None}, tmp_path) == [["clean", "make clean"]]
    assert launch("shell").batch({"build": "*", "exec": "*"}, tmp_path) == [["build", "make"], ["exec", "bash main.sh"]]
    (tmp_path / "Makefile").unlink()
    assert launch("python").batch({"build": "*", "exec": "*"}, tmp_path) == [["exec", "/usr/bin/python3 main.py"]]


def test_java_batch_runs_the_public_class_with_main(tmp_path: Path) -> None:
    (tmp_path / "A.java").write_text("public class A { }")
    (tmp_path / "B.java").write_text("public class Bee { public static void main(String[] a) { } }")
    os.symlink("/etc/hostname", tmp_path / "0.java")  # a link is not followed
    (tmp_path / "Z.java").write_bytes(b"x" * (JAVA_FILE_BYTES + 10))
    assert launch("java").batch({"build": "*", "exec": "*"}, tmp_path) == [
        ["build", "javac -d . *.java"],
        ["exec", "java -cp . Bee"],
    ]


def test_a_response_ends_at_each_batch_step() -> None:
    book = RunBook()
    run = book.start(None)
    book.on_output(run.run_id, "stdout", "cleaned\n")
    book.on_step_finished(run.run_id, "clean", 0)
    assert book.deliverable
    book.on_output(run.run_id, "stderr", "warning\n")
    book.on_step_finished(run.run_id, "build", 2)
    book.on_step_finished(run.run_id, "exec", 9)  # not a reported step
    book.on_finished(run.run_id, 2)
    first = book.take_response()
    assert (first.status, first.exit_code, first.console) == ("clean-finished", 0, [("stdout", "cleaned\n")])
    second = book.take_response()
    assert (second.status, second.exit_code, second.console) == ("build-finished", 2, [("stderr", "warning\n")])
    last = book.take_response()
    assert (last.status, last.exit_code, last.console) == ("finished", 2, [])


def test_an_agent_serves_an_image_by_its_exact_tag_or_by_name_alone() -> None:
    tagged = {"python", "python:3.11", "c", "c:gcc12"}
    assert serves(tagged, "python") and serves(tagged, "python:3.11") and serves(tagged, "c:gcc12")
    assert not serves(tagged, "python:2.7") and not serves(tagged, "go")
    assert serves({"python"}, "python:3.11")  # an agent that lists names only
