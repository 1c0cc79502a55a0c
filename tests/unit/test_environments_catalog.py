"""The environment catalog without a host: the shipped file, lookups, a malformed
catalog's errors, Java's class rule, and the query / batch command plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from bai.agent.environments.catalog import (
    CatalogError,
    Runtime,
    UnknownEnvironment,
    batch_plan,
    java_main_class,
    java_public_class,
    load_catalog,
    parse_catalog,
    query_plan,
)

SEED = ["python", "r", "julia", "octave", "php", "go", "c", "cpp", "java", "nodejs", "lua", "haskell", "rust", "shell"]
REPLS = {"python", "nodejs", "r", "lua", "octave", "php", "haskell", "julia", "shell"}
COMPILED = {"c", "cpp", "go", "java", "rust"}

MINIMAL = """
[[environment]]
name = "c"
tag = "gcc12"
runtime = "compiled"
extension = "c"
compile = "gcc -o {out} {src}"
run = "./{out}"
batch = { build = "gcc -o main *.c", exec = "./main" }
"""


def test_the_shipped_catalog_has_every_seed_language_and_the_ml_environments() -> None:
    catalog = load_catalog()
    assert set(SEED) <= set(catalog.names)
    assert {"python-tensorflow", "python-pytorch"} <= set(catalog.names)
    assert "2.21" in catalog.tags("python-tensorflow") and len(catalog.tags("python-tensorflow")) >= 2
    assert catalog.resolve("python-pytorch:2.13").host.venv is not None
    for name in REPLS:
        assert catalog.resolve(name).runtime.query_mode == "REPL", name
    for name in COMPILED:
        assert catalog.resolve(name).runtime is Runtime.COMPILED, name
    for entry in catalog:
        assert entry.host.binaries, f"{entry.key} names no binary to check"
        assert entry.host.debian or entry.host.venv or entry.host.unavailable, entry.key


def test_ml_environments_pin_their_framework() -> None:
    catalog = load_catalog()
    tf = catalog.resolve("python-tensorflow:2.21").host.venv
    assert tf is not None and tf.requirements == ("tensorflow-cpu==2.21.*",)
    other = [tag for tag in catalog.tags("python-tensorflow") if tag != "2.21"]
    other_venv = catalog.resolve(f"python-tensorflow:{other[0]}").host.venv
    assert other_venv is not None and other_venv.requirements[0].startswith("tensorflow-cpu==")
    torch = catalog.resolve("python-pytorch").host.venv
    assert torch is not None and torch.requirements[0] == "torch==2.13.0+cpu" and "numpy" in torch.requirements
    assert tf.digest() != other_venv.digest()


def test_julia_says_why_it_cannot_be_installed() -> None:
    julia = load_catalog().resolve("julia")
    assert julia.host.debian == ()
    assert julia.host.unavailable and "Debian" in julia.host.unavailable
    assert "julia" in julia.notes.lower()


def test_lookup_with_and_without_a_tag() -> None:
    catalog = load_catalog()
    assert catalog.resolve("python-tensorflow").tag == "2.21"  # the default
    assert catalog.resolve("python-tensorflow:2.21").key == "python-tensorflow:2.21"
    assert catalog.resolve("c").key == catalog.resolve(f"c:{catalog.default_tag('c')}").key
    with pytest.raises(UnknownEnvironment, match="unknown environment 'cobol'"):
        catalog.resolve("cobol")
    with pytest.raises(UnknownEnvironment, match=r"no tag '9.9'; tags: 2\.21"):
        catalog.resolve("python-tensorflow:9.9")


def test_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(MINIMAL)
    assert [entry.key for entry in load_catalog(path)] == ["c:gcc12"]
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('runtime = "compiled"', 'runtime = "compiler"'), r"#1 \(c:gcc12\): field 'runtime'"),
        (('compile = "gcc -o {out} {src}"\n', ""), r"c:gcc12.*needs field 'compile'"),
        (("{src}", "{source}"), r"c:gcc12.*field 'compile': unknown placeholder \{source\}"),
        (('run = "./{out}"', 'run = "./{out"'), r"c:gcc12.*field 'run'.*brace"),
        (('tag = "gcc12"', 'tag = "gcc 12"'), r"#1 \(c:gcc 12\): field 'tag'"),
        (('name = "c"', 'name = "C!"'), r"field 'name'"),
        (('extension = "c"', 'extension = "c"\ncolour = "red"'), r"field 'colour': Extra inputs"),
        (('exec = "./main"', 'exec = "./{class}"'), r"field 'batch.exec': unknown placeholder \{class\}"),
        (
            ('exec = "./main"', 'exec = "./{out}"'),
            r"field 'batch.exec': unknown placeholder \{out\} \(known here: none\)",
        ),
        (('exec = "./main" }', 'exec = "./main" }\nhost = { debian = ["Bad Name"] }'), r"field 'host.debian'"),
        (
            ('run = "./{out}"', 'run = "./{out}"\nrepl = { command = ["x"], sentinel = "{marker}" }'),
            r"field 'repl' is for runtime 'repl'",
        ),
    ],
)
def test_a_malformed_entry_is_refused_naming_the_field(change: tuple[str, str], message: str) -> None:
    text = MINIMAL.replace(*change)
    assert text != MINIMAL
    with pytest.raises(CatalogError, match=message):
        parse_catalog(text, "test.toml")


def test_repl_fields_are_checked() -> None:
    repl = MINIMAL.replace('runtime = "compiled"', 'runtime = "repl"')
    with pytest.raises(CatalogError, match="needs field 'repl'"):
        parse_catalog(repl)
    base = repl + '[environment.repl]\ncommand = ["x"]\n'
    assert parse_catalog(base + 'sentinel = "print({marker})"\n').resolve("c").repl is not None
    with pytest.raises(CatalogError, match=r"field 'repl.sentinel'.*must print \{marker\}"):
        parse_catalog(base + 'sentinel = "print(1)"\n')
    with pytest.raises(CatalogError, match=r"field 'repl.wrap'.*\{code\}"):
        parse_catalog(base + 'sentinel = "{marker}"\nwrap = ":{{ :}}"\n')
    with pytest.raises(CatalogError, match=r"field 'repl\.prompt': not a regular expression"):
        parse_catalog(base + 'sentinel = "{marker}"\nprompt = "(("\n')
    with pytest.raises(CatalogError, match=r"field 'repl\.command'"):
        parse_catalog(repl + '[environment.repl]\ncommand = []\nsentinel = "{marker}"\n')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "test.toml: not valid TOML"),
        ("", "no \\[\\[environment\\]\\] entries"),
        ("version = 2\n" + MINIMAL, "unknown top-level key 'version'"),
        (MINIMAL + MINIMAL, r"environment #2 \(c:gcc12\): c:gcc12 is defined twice"),
        (MINIMAL + MINIMAL.replace("gcc12", "gcc13"), "'c' has 2 tags; exactly one needs default = true"),
        ("environment = [1]", r"environment #1: .*"),
    ],
)
def test_a_malformed_catalog_fails_loudly(text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_catalog(text, "test.toml")


def test_two_tags_with_one_default() -> None:
    text = MINIMAL + MINIMAL.replace("gcc12", "gcc13").replace("runtime =", "default = true\nruntime =")
    catalog = parse_catalog(text)
    assert catalog.default_tag("c") == "gcc13" and catalog.tags("c") == ["gcc12", "gcc13"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("public class Main { public static void main(String[] a) {} }", "Main"),
        ("import java.util.*;\npublic final class Hello {\n}", "Hello"),
        ("class Helper {}\npublic class App {}", "App"),
        ("// public class Commented {}\n/* public class Block {} */\npublic class Real {}", "Real"),
        ('class A { String s = "public class Fake {}"; }', None),
        ("public record Point(int x, int y) {}", "Point"),
        ("class Main {}", None),
    ],
)
def test_java_public_class(source: str, expected: str | None) -> None:
    assert java_public_class(source) == expected


def test_java_query_runs_as_its_public_class() -> None:
    java = load_catalog().resolve("java")
    plan = query_plan(java, "public class Greeter {\n  public static void main(String[] a) {}\n}")
    assert plan.source == "Greeter.java"
    assert plan.compile is not None and "Greeter.java" in plan.compile
    assert plan.run.endswith("Greeter")
    assert query_plan(java, "class Foo {}").source == "Main.java"


def test_java_batch_picks_the_class_with_main() -> None:
    sources = {"A.java": "public class A {}", "B.java": "public class B { public static void main(String[] x) {} }"}
    assert java_main_class(sources) == "B"
    assert java_main_class({"A.java": "public class A {}"}) == "A"
    assert java_main_class({}) == "Main"
    java = load_catalog().resolve("java")
    plan = batch_plan(java, list(sources), sources)
    assert plan.exec.endswith(" B") and plan.build is not None and "*.java" in plan.build


def test_query_plans_for_compiled_and_repl_languages() -> None:
    catalog = load_catalog()
    c = query_plan(catalog.resolve("c"), "int main(){}")
    assert (c.source, c.compile, c.run) == ("main.c", "gcc -O2 -o main main.c -lm", "./main")
    assert query_plan(catalog.resolve("rust"), "").source == "main.rs"
    node = query_plan(catalog.resolve("nodejs"), "1")
    assert node.compile is None and node.run == "node main.js"


def test_venv_environments_need_their_path() -> None:
    tf = load_catalog().resolve("python-tensorflow")
    with pytest.raises(ValueError, match="pass its path"):
        query_plan(tf, "print(1)")
    plan = query_plan(tf, "print(1)", venv=Path("/data/environments/python-tensorflow-2.21"))
    assert plan.run == "/data/environments/python-tensorflow-2.21/bin/python main.py"
    assert tf.interpreter == "{venv}/bin/python"


def test_batch_defaults_and_the_makefile_rule() -> None:
    catalog = load_catalog()
    c = catalog.resolve("c")
    assert batch_plan(c, ["main.c"]) == batch_plan(c, ["main.c", "util.c"])
    plan = batch_plan(c, ["main.c"])
    assert plan.build is not None and plan.build.startswith("gcc ") and plan.exec == "./main"
    assert batch_plan(c, ["main.c", "Makefile"]).build == "make"
    assert batch_plan(c, ["GNUmakefile"]).build == "make"
    python = catalog.resolve("python")
    assert batch_plan(python, ["main.py"]).build is None
    assert batch_plan(python, ["main.py"]).exec.endswith("python3 main.py")
    no_make = parse_catalog(MINIMAL.replace('exec = "./main" }', 'exec = "./main", makefile = false }'))
    assert batch_plan(no_make.resolve("c"), ["Makefile"]).build == "gcc -o main *.c"


def test_every_shipped_repl_has_a_sentinel_for_both_streams() -> None:
    for entry in load_catalog():
        if entry.repl is not None:
            sentinel = entry.repl.sentinel
            assert sentinel.count("{marker}") == 2, entry.key  # stdout and stderr
