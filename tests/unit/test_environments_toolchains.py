"""The shipped catalog's commands against the real toolchains this host has (each test
is skipped where its toolchain is not installed): a REPL keeps state between queries and
its sentinel ends each query on both streams; a compiled language compiles and runs a
query, and a compile error fails with the compiler's message and a non-zero exit.

This drives the REPLs the simple way (every query at once, then end of input); the
runner's engine does the same exchange one query at a time."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bai.agent.environments.catalog import Environment, batch_plan, load_catalog, query_plan
from tests.capabilities import require_or_skip

CATALOG = load_catalog()
MARKER = "bai-sentinel-7f3a"

#: per REPL: a query that sets state and one that reads it (printing 42)
STATE = {
    "nodejs": ("var x = 41", "console.log(x + 1)"),
    "lua": ("x = 41", "print(x + 1)"),
    "shell": ("x=41", "echo $((x + 1))"),
    "php": ("$x = 41;", 'echo $x + 1, "\\n";'),
    "r": ("x <- 41", "cat(x + 1, '\\n')"),
    "octave": ("x = 41;", "disp(x + 1)"),
    "haskell": ("let x = 41", "print (x + 1)"),
    "julia": ("x = 41", "println(x + 1)"),
}

#: per compiled language: a program printing 42, and one that does not compile
PROGRAMS = {
    "c": (
        '#include <stdio.h>\nint main(void) { printf("%d\\n", 6 * 7); return 0; }\n',
        "int main(void) { return x; }\n",
    ),
    "cpp": ("#include <iostream>\nint main() { std::cout << 6 * 7 << std::endl; }\n", "int main() { return x; }\n"),
    "go": ('package main\nimport "fmt"\nfunc main() { fmt.Println(6 * 7) }\n', "package main\nfunc main() { x }\n"),
    "java": (
        "public class Answer { public static void main(String[] a) { System.out.println(6 * 7); } }\n",
        "public class Broken { void f() { return 1; } }\n",
    ),
    "rust": ('fn main() { println!("{}", 6 * 7); }\n', 'fn main() { let x: i32 = "no"; }\n'),
}


def _usable(env: Environment) -> bool:
    return all(shutil.which(binary) for binary in env.host.binaries) and not (
        env.host.debian and _dpkg_missing(env.host.debian)
    )


def _dpkg_missing(packages: tuple[str, ...]) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    result = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}\n", *packages], capture_output=True,
                            text=True, timeout=30, check=False)  # fmt: skip
    return result.stdout.split() != ["installed"] * len(packages)


def _env(name: str) -> Environment:
    env = CATALOG.resolve(name)
    if not _usable(env):
        capability = "toolchains" if env.host.unavailable is None else "platform"  # no install route: Julia
        require_or_skip(capability, f"{env.key} is not installed here")
    return env


@pytest.mark.parametrize("name", sorted(STATE))
def test_a_repl_keeps_state_and_its_sentinel_ends_each_query(name: str, tmp_path: Path) -> None:
    env = _env(name)
    assert env.repl is not None
    sentinel = env.repl.sentinel.format(marker=MARKER)
    init = env.repl.init + "\n" if env.repl.init else ""  # the runner sends it first, once
    feed = init + "".join(env.repl.wrap.format(code=code) + "\n" + sentinel + "\n" for code in STATE[name])
    result = subprocess.run(list(env.repl.command), input=feed, capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "dumb"},
                            check=False)  # fmt: skip
    prompt = re.compile(env.repl.prompt) if env.repl.prompt else None
    stdout = [(prompt.sub("", line) if prompt else line).strip() for line in result.stdout.splitlines()]
    stderr = [line.strip() for line in result.stderr.splitlines()]
    assert stdout.count(MARKER) == 2, (result.stdout, result.stderr)
    assert stderr.count(MARKER) == 2, (result.stdout, result.stderr)
    first, second = (index for index, line in enumerate(stdout) if line == MARKER)
    assert "42" in stdout[first:second], result.stdout
    assert "42" not in stdout[:first]


def _run_plan(env: Environment, code: str, workdir: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    plan = query_plan(env, code)
    (workdir / plan.source).write_text(code)
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TERM": "dumb"}
    if plan.compile:
        built = subprocess.run(["/bin/sh", "-c", plan.compile], cwd=workdir, capture_output=True, text=True,
                               timeout=120, env=environ, check=False)  # fmt: skip
        if built.returncode != 0:
            return built, plan.source
    ran = subprocess.run(["/bin/sh", "-c", plan.run], cwd=workdir, capture_output=True, text=True, timeout=60,
                         env=environ, check=False)  # fmt: skip
    return ran, plan.source


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_a_compiled_query_compiles_and_runs(name: str, tmp_path: Path) -> None:
    env = _env(name)
    good, bad = PROGRAMS[name]
    result, source = _run_plan(env, good, tmp_path / "good")
    assert result.returncode == 0 and result.stdout.strip() == "42", (result.stdout, result.stderr)
    if name == "java":
        assert source == "Answer.java"
    failed, _ = _run_plan(env, bad, tmp_path / "bad")
    assert failed.returncode != 0
    assert failed.stderr.strip(), "the compiler's errors belong on stderr"


@pytest.fixture(autouse=True)
def _workdirs(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()


@pytest.mark.parametrize("name", ["python", "nodejs", "lua", "shell", "php"])
def test_a_script_query_runs_with_the_run_command(name: str, tmp_path: Path) -> None:
    env = _env(name)
    code = {"python": "print(6 * 7)", "nodejs": "console.log(6 * 7)", "lua": "print(6 * 7)", "shell": "echo 42",
            "php": "<?php echo 6 * 7, \"\\n\";"}[name]  # fmt: skip
    result, _ = _run_plan(env, code, tmp_path / "good")
    assert result.returncode == 0 and result.stdout.strip() == "42", (result.stdout, result.stderr)


@pytest.mark.slow
def test_c_batch_defaults_build_and_run(tmp_path: Path) -> None:
    env = _env("c")
    (tmp_path / "main.c").write_text(
        '#include "util.h"\n#include <stdio.h>\nint main(void) { printf("%d\\n", f()); }\n'
    )
    (tmp_path / "util.h").write_text("int f(void);\n")
    (tmp_path / "util.c").write_text("int f(void) { return 42; }\n")
    plan = batch_plan(env, [path.name for path in tmp_path.iterdir()])
    assert plan.build is not None
    subprocess.run(["/bin/sh", "-c", plan.build], cwd=tmp_path, check=True, timeout=120)
    out = subprocess.run(["/bin/sh", "-c", plan.exec], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "42"
