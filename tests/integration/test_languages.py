"""Every language of the catalog through the API: query mode (hello world, state across
queries where a REPL keeps it, a compile error for compiled languages) and batch mode
(clean / build / exec with the catalog's ``*`` defaults, a Makefile, a failing build,
the build log). A language whose toolchain this host lacks is skipped, with the reason
``bai env list`` gives."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from bai.agent.environments import host_status, load_catalog
from bai.agent.environments.catalog import Runtime
from tests.apiclient import SignedClient, stderr_of, stdout_of
from tests.capabilities import needs
from tests.conftest import RunningServer

CATALOG = load_catalog()
STATUS = {status.env.name: status for status in host_status(CATALOG, Path("/nonexistent"))}


@dataclass(frozen=True)
class Lang:
    name: str
    hello: str  # a query that prints "hello"
    main: str  # main.<ext> of batch mode, printing "hello batch"
    state: tuple[str, str] | None = None  # two queries: the second prints 42
    broken: str | None = None  # a query that does not compile


LANGS = [
    Lang("python", 'print("hello")', 'print("hello batch")', ("x = 41", "print(x + 1)")),
    Lang("r", 'cat("hello\\n")', 'cat("hello batch\\n")', ("x <- 41", "cat(x + 1, '\\n')")),
    Lang("julia", 'println("hello")', 'println("hello batch")', ("x = 41", "println(x + 1)")),
    Lang("octave", 'disp("hello")', 'disp("hello batch")', ("x = 41;", "disp(x + 1)")),
    Lang("php", 'echo "hello\\n";', '<?php echo "hello batch\\n";', ("$x = 41;", 'echo $x + 1, "\\n";')),
    Lang("nodejs", 'console.log("hello")', 'console.log("hello batch")', ("let x = 41", "console.log(x + 1)")),
    Lang("lua", 'print("hello")', 'print("hello batch")', ("x = 41", "print(x + 1)")),
    Lang("haskell", 'putStrLn "hello"', 'main = putStrLn "hello batch"', ("let x = 41", "print (x + 1)")),
    Lang("shell", "echo hello", "echo hello batch", ("x=41", "echo $((x + 1))")),
    Lang(
        "c",
        '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }',
        '#include <stdio.h>\nint main(void) { puts("hello batch"); return 0; }',
        broken="int main(void) { return undeclared; }",
    ),
    Lang(
        "cpp",
        '#include <iostream>\nint main() { std::cout << "hello" << std::endl; }',
        '#include <iostream>\nint main() { std::cout << "hello batch" << std::endl; }',
        broken="int main() { return undeclared; }",
    ),
    Lang(
        "go",
        'package main\nimport "fmt"\nfunc main() { fmt.Println("hello") }',
        'package main\nimport "fmt"\nfunc main() { fmt.Println("hello batch") }',
        broken="package main\nfunc main() { undeclared() }",
    ),
    Lang(
        "java",
        'public class Main { public static void main(String[] a) { System.out.println("hello"); } }',
        'public class Main { public static void main(String[] a) { System.out.println("hello batch"); } }',
        broken="public class Main { public static void main(String[] a) { undeclared(); } }",
    ),
    Lang(
        "rust",
        'fn main() { println!("hello"); }',
        'fn main() { println!("hello batch"); }',
        broken="fn main() { undeclared(); }",
    ),
]


def _param(lang: Lang) -> Any:
    status = STATUS[lang.name]
    reason = f"{status.env.key} is not available here: {status.reason}"
    capability = "toolchains" if status.env.host.unavailable is None else "platform"  # no install route: Julia
    return pytest.param(lang, id=lang.name, marks=needs(capability, None if status.available else reason))


def test_every_language_of_the_catalog_is_covered() -> None:
    names = {env.name for env in CATALOG if env.host.venv is None}
    assert names == {lang.name for lang in LANGS}


def is_repl(lang: Lang) -> bool:
    return CATALOG.resolve(lang.name).runtime in (Runtime.PYTHON, Runtime.REPL)


@pytest.fixture
def lang_session(api: SignedClient, request: pytest.FixtureRequest) -> Iterator[tuple[Lang, str]]:
    lang: Lang = request.param
    name = f"lang-{lang.name}-{uuid.uuid4().hex[:6]}"
    r = api.post("/session", {"image": lang.name, "name": name})
    assert r.status_code == 201, r.text
    yield lang, name
    api.delete(f"/session/{name}")


def scratch_of(server: RunningServer, api: SignedClient, session: str) -> Path:
    """The session's /home/work on the host (uploads are another test's business)."""
    session_id = api.get(f"/session/{session}").json()["sessionId"]
    path: Path = server.server.agent.backend.sandboxes[session_id].scratch  # type: ignore[attr-defined]
    return path


def batch(api: SignedClient, session: str, **options: Any) -> tuple[list[tuple[str, int | None]], dict[str, Any]]:
    """A batch run followed to its end: the (status, exitCode) of each answer, and the
    last answer with the console of all of them."""
    result = api.post(f"/session/{session}", {"mode": "batch", "code": "", "options": options}).json()["result"]
    statuses = [(result["status"], result["exitCode"])]
    console = list(result["console"])
    while result["status"] not in ("finished", "exec-timeout"):
        result = api.post(f"/session/{session}", {"mode": "continue", "runId": result["runId"]}).json()["result"]
        statuses.append((result["status"], result["exitCode"]))
        console += result["console"]
    result["console"] = console
    return [s for s in statuses if s[0] != "continued"], result


LANG_PARAMS = [_param(lang) for lang in LANGS]


@pytest.mark.parametrize("lang_session", LANG_PARAMS, indirect=True)
def test_hello_world_in_query_mode(api: SignedClient, lang_session: tuple[Lang, str]) -> None:
    lang, session = lang_session
    result = api.run(session, lang.hello)
    assert result["status"] == "finished" and result["exitCode"] == 0, result
    assert stdout_of(result).strip().splitlines()[-1] == "hello", result


@pytest.mark.parametrize("lang_session", [p for p in LANG_PARAMS if is_repl(p.values[0])], indirect=True)
def test_state_is_kept_across_queries(api: SignedClient, lang_session: tuple[Lang, str]) -> None:
    lang, session = lang_session
    assert lang.state is not None
    first = api.run(session, lang.state[0])
    assert first["exitCode"] == 0 and stderr_of(first) == "", first
    second = api.run(session, lang.state[1])
    assert stdout_of(second).strip() == "42", second


@pytest.mark.parametrize("lang_session", [p for p in LANG_PARAMS if not is_repl(p.values[0])], indirect=True)
def test_a_compile_error_is_on_stderr_with_a_non_zero_exit_code(
    api: SignedClient, lang_session: tuple[Lang, str]
) -> None:
    lang, session = lang_session
    assert lang.broken is not None
    result = api.run(session, lang.broken)
    assert result["status"] == "finished" and result["exitCode"] != 0, result
    assert "undeclared" in stderr_of(result), result
    assert stdout_of(result) == ""
    again = api.run(session, lang.hello)  # the next query compiles afresh
    assert again["exitCode"] == 0 and "hello" in stdout_of(again), again


@pytest.mark.parametrize("lang_session", LANG_PARAMS, indirect=True)
def test_hello_world_in_batch_mode(
    api: SignedClient, bai_server: RunningServer, lang_session: tuple[Lang, str]
) -> None:
    lang, session = lang_session
    env = CATALOG.resolve(lang.name)
    source = "Main.java" if env.source == "public-class" else f"main.{env.extension}"
    (scratch_of(bai_server, api, session) / source).write_text(lang.main)
    statuses, result = batch(api, session, clean="*", build="*", exec="*")
    expected = [("build-finished", 0)] if env.batch.build else []
    assert statuses == [*expected, ("finished", 0)], result
    assert stdout_of(result).strip() == "hello batch", result


@pytest.mark.parametrize("lang_session", [_param(LANGS[-5])], indirect=True)  # c
def test_a_makefile_is_the_build_and_the_build_log_is_optional(
    api: SignedClient, bai_server: RunningServer, lang_session: tuple[Lang, str]
) -> None:
    lang, session = lang_session
    scratch = scratch_of(bai_server, api, session)
    (scratch / "prog.c").write_text(lang.main)
    (scratch / "Makefile").write_text(
        "main: prog.c\n\t@echo building from the Makefile\n\tgcc -o main prog.c\nclean:\n\trm -f main\n"
    )
    statuses, result = batch(api, session, clean="make clean", build="*", exec="*")
    assert statuses == [("clean-finished", 0), ("build-finished", 0), ("finished", 0)], result
    assert stdout_of(result) == "rm -f main\nhello batch\n"  # a good build's output is dropped

    statuses, result = batch(api, session, clean="make clean", build="*", buildLog=True, exec="*")
    assert statuses == [("clean-finished", 0), ("build-finished", 0), ("finished", 0)], result
    assert "building from the Makefile" in stdout_of(result)


@pytest.mark.parametrize("lang_session", [_param(LANGS[-5])], indirect=True)  # c
def test_a_failing_build_stops_the_batch_before_exec(
    api: SignedClient, bai_server: RunningServer, lang_session: tuple[Lang, str]
) -> None:
    lang, session = lang_session
    (scratch_of(bai_server, api, session) / "main.c").write_text(lang.broken or "")
    statuses, result = batch(api, session, build="*", exec="echo never")
    assert statuses[0][0] == "build-finished" and statuses[0][1] != 0, result
    assert statuses[-1] == ("finished", statuses[0][1])
    assert "undeclared" in stderr_of(result)  # a failing build's output is kept
    assert "never" not in stdout_of(result)
    statuses, result = batch(api, session, exec="echo $((6 * 7))")  # a command of one's own
    assert statuses == [("finished", 0)] and stdout_of(result) == "42\n"


@pytest.mark.parametrize("lang_session", [_param(LANGS[-2])], indirect=True)  # java
def test_java_runs_the_public_class_of_the_query_and_of_batch_files(
    api: SignedClient, bai_server: RunningServer, lang_session: tuple[Lang, str]
) -> None:
    _, session = lang_session
    code = 'public class Foo { public static void main(String[] a) { System.out.println("I am Foo"); } }'
    result = api.run(session, code)
    assert result["exitCode"] == 0 and stdout_of(result) == "I am Foo\n", result
    scratch = scratch_of(bai_server, api, session)
    (scratch / "Foo.java").unlink()  # the query's: it declares main too, and comes first by name
    (scratch / "Greeter.java").write_text('public class Greeter { static String hi() { return "hi"; } }')
    (scratch / "Hello.java").write_text(
        "// public class NotThis\npublic class Hello {\n"
        '  public static void main(String[] a) { System.out.println(Greeter.hi() + " from Hello"); }\n}\n'
    )
    statuses, result = batch(api, session, build="*", exec="*")
    assert statuses == [("build-finished", 0), ("finished", 0)], result
    assert stdout_of(result) == "hi from Hello\n"


@pytest.mark.parametrize("lang_session", [_param(LANGS[0])], indirect=True)  # python
def test_batch_over_the_streaming_websocket(
    api: SignedClient, bai_server: RunningServer, lang_session: tuple[Lang, str]
) -> None:
    _, session = lang_session
    (scratch_of(bai_server, api, session) / "main.py").write_text("print('streamed batch')")
    path = f"/stream/session/{session}/execute"
    headers = api.headers("GET", path, b"", None)
    with connect("ws" + api.endpoint[4:] + path, additional_headers=headers, open_timeout=10) as ws:
        ws.send(
            json.dumps({"mode": "batch", "code": "", "options": {"build": "echo built", "buildLog": True, "exec": "*"}})
        )
        frames = []
        while not frames or frames[-1]["status"] not in ("finished", "error"):
            frames.append(json.loads(ws.recv(timeout=20)))
    statuses = [(frame["status"], frame["exitCode"]) for frame in frames if frame["status"] != "continued"]
    assert statuses == [("build-finished", 0), ("finished", 0)], frames
    text = "".join(data for frame in frames for kind, data in frame["console"] if kind == "stdout")
    assert text == "built\nstreamed batch\n"


def test_bad_batch_options_are_refused(api: SignedClient) -> None:
    name = f"lang-bad-{uuid.uuid4().hex[:6]}"
    assert api.post("/session", {"image": "python", "name": name}).status_code == 201
    try:
        r = api.post(f"/session/{name}", {"mode": "batch", "options": {"exec": ["not", "a", "string"]}})
        assert r.status_code == 400 and "options.exec" in r.text, r.text
        r = api.post(f"/session/{name}", {"mode": "batch", "options": "exec"})
        assert r.status_code == 400 and "options" in r.text
    finally:
        api.delete(f"/session/{name}")


def test_an_unknown_or_unavailable_image_is_refused_naming_image(api: SignedClient) -> None:
    for image in ("cobol", "python:2.7"):
        r = api.post("/session", {"image": image, "name": f"lang-{uuid.uuid4().hex[:6]}"})
        assert r.status_code == 400, r.text
        assert "image" in r.text and image in r.text


@needs("toolchains", None if STATUS["c"].available else f"c is not available here: {STATUS['c'].reason}")
def test_bai_run_compiles_and_runs_a_c_file(bai_server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "hello.c"
    source.write_text('#include <stdio.h>\nint main(void) { puts("hello from C"); return 5; }\n')
    cli = [sys.executable, "-m", "bai.client.cli.main", "run", "c", str(source)]
    done = subprocess.run(cli, env=bai_server.env, capture_output=True, text=True, timeout=90, check=False)
    assert (done.returncode, done.stdout) == (5, "hello from C\n"), done.stderr
    source.write_text("int main(void) { return undeclared; }\n")
    done = subprocess.run(cli, env=bai_server.env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode != 0 and "undeclared" in done.stderr and done.stdout == ""


#: A whole program in query mode, as Backend.AI's query mode runs it (a script): one
#: that prints, one that fails; and REPL lines around them (the REPL's state is kept).
PROGRAMS = {
    "php": (
        '<?php\n$greeting = "hello program";\necho $greeting, "\\n";\n',
        "<?php\nundefined_function();\n",
        ("$x = 41;", 'echo $x + 1, "\\n";'),
    ),
    "haskell": (
        'module Main where\n\ngreeting :: String\ngreeting = "hello program"\n\n'
        "main :: IO ()\nmain = putStrLn greeting\n",
        "main :: IO ()\nmain = putStrLn undefinedName\n",
        ("let x = 41", "print (x + 1)"),
    ),
}


@pytest.mark.parametrize("lang_session", [_param(lang) for lang in LANGS if lang.name in PROGRAMS], indirect=True)
def test_a_whole_program_in_query_mode_prints_what_it_prints(api: SignedClient, lang_session: tuple[Lang, str]) -> None:
    lang, session = lang_session
    program, failing, (define, use) = PROGRAMS[lang.name]
    assert api.run(session, define)["exitCode"] == 0
    result = api.run(session, program)
    assert result["status"] == "finished" and result["exitCode"] == 0, result
    assert (stdout_of(result), stderr_of(result)) == ("hello program\n", ""), result
    failed = api.run(session, failing)
    assert failed["exitCode"] != 0 and "undefined" in stdout_of(failed) + stderr_of(failed), failed
    assert stdout_of(api.run(session, use)).strip() == "42"  # interactive lines still go to the REPL
