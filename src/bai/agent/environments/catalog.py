"""The catalog's model and loader: I/O-free apart from reading the TOML file.

An entry (``Environment``) says how a session of that environment runs: its
runtime (the runner engine that serves query mode), its REPL when it has one,
how a query's file is compiled and run, the defaults of batch mode's ``*``, and
what the host needs (Debian packages and binaries, or a virtual environment).
Entries are keyed by ``name:tag``; each name has one default tag.

Errors::

    CatalogError (ValueError)         a catalog that cannot be read or does not make sense;
     │                                the message names the file, the entry and the field
     └── UnknownEnvironment           a lookup of a name or tag the catalog lacks
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import tomllib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: what the default catalog file is called, beside this module
DEFAULT_CATALOG = "catalog.toml"
_NAME = r"^[a-z][a-z0-9-]{0,39}$"
_TAG = r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,31}$"
_MAKEFILES = ("GNUmakefile", "makefile", "Makefile")


class CatalogError(ValueError):
    """A catalog file that cannot be read or does not make sense."""


class UnknownEnvironment(CatalogError):
    """A ``name[:tag]`` the catalog has no entry for."""


class Runtime(StrEnum):
    """The runner engine that serves query mode."""

    PYTHON = "python"  # the runner's python engine: a persistent interpreter
    REPL = "repl"  # another language's REPL, driven line by line with a sentinel
    COMPILED = "compiled"  # each query is written to a file, compiled and run
    SCRIPT = "script"  # each query is written to a file and run by an interpreter

    @property
    def query_mode(self) -> str:
        """How a query runs, in a word or two (``bai env list``)."""
        return {
            Runtime.PYTHON: "REPL",
            Runtime.REPL: "REPL",
            Runtime.COMPILED: "compile-each",
            Runtime.SCRIPT: "run-each",
        }[self]


def placeholders(template: str) -> set[str]:
    """The ``{name}`` fields of a command template; a stray brace is a ``CatalogError``."""
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as exc:
        raise CatalogError(f"{template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None


def _check_template(template: str, allowed: Collection[str]) -> str:
    unknown = placeholders(template) - set(allowed)
    if unknown:
        known = ", ".join(f"{{{name}}}" for name in sorted(allowed)) or "none"
        raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}} (known here: {known})")
    return template


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Repl(_Model):
    """A language REPL fed the query's code on stdin. The runner knows a query is done
    when ``sentinel`` (code that prints ``{marker}`` to stdout and to stderr) has run: the
    marker counts where it is a whole line once ``prompt`` is stripped, since some REPLs
    echo their input (with the marker in it) when stdin is not a terminal."""

    command: tuple[str, ...] = Field(min_length=1)
    sentinel: str
    #: how the query's code is framed before it is sent (GHCi's ``:{ ... :}``)
    wrap: str = "{code}"
    #: a regular expression for prompts the REPL prints even without a terminal; stripped
    prompt: str | None = None
    #: the REPL echoes each input line (readline without a terminal): the runner drops them
    echo: bool = False
    #: code sent once when the REPL starts, before its first query (its output is dropped)
    init: str | None = None
    #: a regular expression (searched in a query's code) that tells a whole program from
    #: REPL input: PHP that opens with ``<?php``, Haskell that defines ``main``. Such a query
    #: runs as Backend.AI's query mode runs it, as a script (the entry's ``run`` on
    #: ``main.<extension>``), and the REPL's state is left as it was
    program: str | None = None

    @field_validator("sentinel")
    @classmethod
    def _sentinel(cls, value: str) -> str:
        _check_template(value, {"marker"})
        if "marker" not in placeholders(value):
            raise ValueError("must print {marker}")
        return value

    @field_validator("wrap")
    @classmethod
    def _wrap(cls, value: str) -> str:
        if placeholders(value) != {"code"}:
            raise ValueError("must contain {code} and no other placeholder")
        return value

    @field_validator("prompt", "program")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class Batch(_Model):
    """The commands batch mode runs for ``*``. A Makefile in the working dir makes
    the build ``make`` (when ``makefile`` is true)."""

    build: str | None = None
    exec: str
    makefile: bool = True


class Venv(_Model):
    """A virtual environment built by ``bai env build``: ``python -m venv`` + ``pip install``."""

    python: str = "/usr/bin/python3"
    requirements: tuple[str, ...] = ()
    pip_args: tuple[str, ...] = ()

    @field_validator("python")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path (the sandbox sees the host's /usr read-only)")
        return value

    def digest(self) -> str:
        """The spec's hash: a built venv with another hash is out of date."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class Host(_Model):
    """What the host needs: Debian packages and the binaries that prove them, and/or a venv.
    ``unavailable`` says why there is no install route (the binaries may still be there)."""

    debian: tuple[str, ...] = ()
    binaries: tuple[str, ...] = ()
    venv: Venv | None = None
    unavailable: str | None = None
    #: host paths outside /usr the toolchain reads (GHC's package db in /var/lib/ghc): the
    #: sandbox sees them read-only at the same path
    binds: tuple[str, ...] = ()

    @field_validator("binds")
    @classmethod
    def _binds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path.startswith("/") or ".." in path.split("/") or path.rstrip("/") in ("", "/home", "/tmp"):
                raise ValueError(f"{path!r} is not an absolute path the sandbox may see")
        return value

    @field_validator("debian")
    @classmethod
    def _packages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for package in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", package):
                raise ValueError(f"{package!r} is not a Debian package name")
        return value


class Environment(_Model):
    """One catalog entry, ``name:tag``. Invariants (checked on load): a ``repl`` runtime
    has a REPL, a ``compiled`` one a compile command, ``python`` an interpreter;
    ``{class}`` appears only with ``source = "public-class"``, ``{venv}`` only with a venv."""

    name: str = Field(pattern=_NAME)
    tag: str = Field(pattern=_TAG)
    default: bool = False
    runtime: Runtime
    #: the query's file name: ``main.<extension>``, or ``<Class>.java`` for "public-class"
    source: Literal["main", "public-class"] = "main"
    extension: str = Field(pattern=r"^[A-Za-z0-9]{1,8}$")
    interpreter: str | None = None
    repl: Repl | None = None
    compile: str | None = None
    run: str
    batch: Batch
    host: Host = Host()
    notes: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}:{self.tag}"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        needs = {
            Runtime.PYTHON: ("interpreter", self.interpreter),
            Runtime.REPL: ("repl", self.repl),
            Runtime.COMPILED: ("compile", self.compile),
        }
        if self.runtime in needs and needs[self.runtime][1] is None:
            raise ValueError(f"runtime {self.runtime.value!r} needs field {needs[self.runtime][0]!r}")
        if self.repl is not None and self.runtime is not Runtime.REPL:
            raise ValueError(f"field 'repl' is for runtime 'repl', not {self.runtime.value!r}")
        for field, template, allowed in self._templates():
            try:
                _check_template(template, allowed)
            except (ValueError, CatalogError) as exc:
                raise ValueError(f"field {field!r}: {exc}") from None
        return self

    def _templates(self) -> Iterator[tuple[str, str, set[str]]]:
        """Each command template with the placeholders its caller fills (``query_plan``,
        ``batch_plan``, the sandbox start for ``interpreter``)."""
        venv = {"venv"} if self.host.venv else set()
        extra = venv | ({"class"} if self.source == "public-class" else set())
        query = {"src", "out"} | extra
        fields = [
            ("interpreter", self.interpreter, venv),
            ("compile", self.compile, query),
            ("run", self.run, query),
            ("batch.build", self.batch.build, extra),
            ("batch.exec", self.batch.exec, extra),
        ]
        yield from ((field, value, allowed) for field, value, allowed in fields if value is not None)


@dataclass(frozen=True)
class QueryPlan:
    """How one query of a file-based runtime runs: write ``code`` to ``source``, run
    ``compile`` (if any; a failure ends the query with its exit code), then ``run``."""

    source: str
    compile: str | None
    run: str


@dataclass(frozen=True)
class BatchPlan:
    """Batch mode's ``*`` defaults for the files in the working dir."""

    build: str | None
    exec: str


_JAVA_NOISE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
_JAVA_PUBLIC = re.compile(
    r"\bpublic\s+(?:(?:final|abstract|static|strictfp|sealed|non-sealed)\s+)*"
    r"(?:class|interface|enum|record)\s+([A-Za-z_$][\w$]*)"
)
_JAVA_MAIN = re.compile(r"\bstatic\s+(?:final\s+)?void\s+main\s*\(")


def java_public_class(source: str) -> str | None:
    """The first public top-level type a Java source declares (comments and strings ignored)."""
    match = _JAVA_PUBLIC.search(_JAVA_NOISE.sub(" ", source))
    return match.group(1) if match else None


def java_main_class(sources: Mapping[str, str]) -> str:
    """Batch mode's class: the public class of the first file (by name) that declares
    ``main``; else the first public class; else ``Main``."""
    fallback = None
    for name in sorted(sources):
        text = _JAVA_NOISE.sub(" ", sources[name])
        public = java_public_class(text)
        if public and _JAVA_MAIN.search(text):
            return public
        fallback = fallback or public
    return fallback or "Main"


def _venv_value(env: Environment, venv: Path | None) -> str:
    if env.host.venv is not None and venv is None:
        raise ValueError(f"{env.key} runs in a virtual environment: pass its path")
    return str(venv) if venv else ""


def _fill(template: str, values: Mapping[str, str]) -> str:
    return template.format_map(values)


def query_plan(env: Environment, code: str, venv: Path | None = None) -> QueryPlan:
    """The file name and commands for one query of ``env`` (any runtime: a REPL's
    ``run`` is what a batch-less file run would use)."""
    values = {"out": "main", "venv": _venv_value(env, venv)}
    if env.source == "public-class":
        values["class"] = java_public_class(code) or "Main"
        values["src"] = f"{values['class']}.{env.extension}"
    else:
        values["src"] = f"main.{env.extension}"
    compile_ = _fill(env.compile, values) if env.compile else None
    return QueryPlan(values["src"], compile_, _fill(env.run, values))


def batch_plan(
    env: Environment, files: Collection[str], java_sources: Mapping[str, str] | None = None, venv: Path | None = None
) -> BatchPlan:
    """Batch ``*`` for the working dir's ``files``: a Makefile wins the build step;
    ``java_sources`` (name → text of the ``.java`` files) decide ``{class}``."""
    values = {"venv": _venv_value(env, venv), "class": java_main_class(java_sources or {})}
    build = _fill(env.batch.build, values) if env.batch.build else None
    if env.batch.makefile and any(name in files for name in _MAKEFILES):
        build = "make"
    return BatchPlan(build, _fill(env.batch.exec, values))


class Catalog:
    """The entries of one catalog file, looked up by ``name[:tag]``."""

    def __init__(self, entries: Collection[Environment], origin: str = "catalog") -> None:
        self.origin = origin
        self._entries = {entry.key: entry for entry in entries}
        self._defaults: dict[str, str] = {}
        for name in dict.fromkeys(entry.name for entry in entries):
            tags = [entry for entry in entries if entry.name == name]
            marked = [entry.tag for entry in tags if entry.default]
            if len(tags) > 1 and len(marked) != 1:
                raise CatalogError(
                    f"{origin}: environment {name!r} has {len(tags)} tags; exactly one needs "
                    f"default = true (now: {', '.join(marked) or 'none'})"
                )
            self._defaults[name] = marked[0] if marked else tags[0].tag

    def __iter__(self) -> Iterator[Environment]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        return list(self._defaults)

    def tags(self, name: str) -> list[str]:
        return [entry.tag for entry in self if entry.name == name]

    def default_tag(self, name: str) -> str:
        return self.resolve(name).tag

    def resolve(self, reference: str) -> Environment:
        """The entry for ``name`` (its default tag) or ``name:tag``."""
        name, _, tag = reference.partition(":")
        if name not in self._defaults:
            raise UnknownEnvironment(f"unknown environment {name!r}; known: {', '.join(self.names)}")
        entry = self._entries.get(f"{name}:{tag or self._defaults[name]}")
        if entry is None:
            raise UnknownEnvironment(f"environment {name!r} has no tag {tag!r}; tags: {', '.join(self.tags(name))}")
        return entry


def _describe(raw: object, index: int) -> str:
    if isinstance(raw, dict):
        name, tag = raw.get("name", "?"), raw.get("tag", "?")
        return f"environment #{index + 1} ({name}:{tag})"
    return f"environment #{index + 1}"


def _field_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"field {where!r}: {message}" if where else message)
    return "; ".join(parts)


def parse_catalog(text: str, origin: str = "catalog") -> Catalog:
    """Check and load a catalog's TOML text; every problem is a ``CatalogError`` naming
    ``origin``, the entry (number and ``name:tag``) and the field."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{origin}: not valid TOML: {exc}") from None
    unknown = set(data) - {"environment"}
    if unknown:
        raise CatalogError(f"{origin}: unknown top-level key {sorted(unknown)[0]!r} (only [[environment]] entries)")
    raw_entries = data.get("environment")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise CatalogError(f"{origin}: no [[environment]] entries")
    entries: list[Environment] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_entries):
        try:
            entry = Environment.model_validate(raw)
        except ValidationError as exc:
            raise CatalogError(f"{origin}: {_describe(raw, index)}: {_field_errors(exc)}") from None
        if entry.key in seen:
            raise CatalogError(f"{origin}: {_describe(raw, index)}: {entry.key} is defined twice")
        seen.add(entry.key)
        entries.append(entry)
    return Catalog(entries, origin)


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog at ``path``, or the one shipped beside this module."""
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_CATALOG).read_text()
        return parse_catalog(text, DEFAULT_CATALOG)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the catalog: {exc.strerror}") from None
    return parse_catalog(text, str(path))
