"""The policy model and its loader: I/O-free apart from reading the TOML file.

A policy is an ordered tuple of deny rules; the default action is always allow
and every denial returns EPERM (what Docker does), so neither is configurable.
An overlay (an environment's or an operator's file) may add rules (``[[deny]]``,
same shape as the default) and remove every rule of a syscall (``allow = [...]``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

FULL_MASK = 2**64 - 1


class PolicyError(ValueError):
    """A policy file that cannot be read or does not make sense."""


@dataclass(frozen=True)
class ArgMatch:
    """The call matches when ``(args[index] & mask) == value`` (mask None: the whole argument)."""

    index: int
    value: int
    mask: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 5:
            raise PolicyError(f"argument index {self.index} is not 0..5")
        limit = FULL_MASK if self.mask is None else self.mask
        if not 0 <= self.value <= FULL_MASK or not 0 <= limit <= FULL_MASK or self.value & ~limit:
            raise PolicyError(f"argument match value {self.value:#x} / mask {limit:#x} is invalid")


@dataclass(frozen=True)
class Rule:
    """Deny ``syscall`` (when every one of ``args`` matches; no args: always)."""

    syscall: str
    why: str = ""
    args: tuple[ArgMatch, ...] = ()


@dataclass(frozen=True)
class Overlay:
    """Changes to a base policy: ``allow`` removes all rules of those syscalls, then ``deny`` is added."""

    deny: tuple[Rule, ...] = ()
    allow: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]

    @property
    def syscalls(self) -> list[str]:
        """The names with at least one rule, sorted."""
        return sorted({rule.syscall for rule in self.rules})

    def merged(self, overlay: Overlay) -> Policy:
        """This policy with ``overlay`` applied; a rule already present is not repeated."""
        kept = [rule for rule in self.rules if rule.syscall not in overlay.allow]
        seen = {(rule.syscall, rule.args) for rule in kept}
        for rule in overlay.deny:
            if (rule.syscall, rule.args) not in seen:
                kept.append(rule)
                seen.add((rule.syscall, rule.args))
        return Policy(tuple(kept))


def default_policy() -> Policy:
    """The repository's default (``default.toml`` beside this module)."""
    text = resources.files(__package__).joinpath("default.toml").read_text()
    return Policy(parse_overlay(text, "default.toml").deny)


def policy_for(environment: str, overlay: Path | None = None, environment_dir: Path | None = None) -> Policy:
    """The policy of one environment: the default, then the operator's ``overlay`` for
    every environment, then ``<environment_dir>/<base name>.toml`` if that file exists
    (the environment's own: it may loosen what its language needs or tighten more).
    The base name is the environment's name without its version tag."""
    policy = default_policy()
    if overlay is not None:
        policy = policy.merged(load_overlay(overlay))
    if environment_dir is not None:
        base = environment.split(":", 1)[0]
        if not base or "/" in base or base.startswith("."):
            raise PolicyError(f"not an environment name: {environment!r}")
        own = environment_dir / f"{base}.toml"
        if own.is_file():
            policy = policy.merged(load_overlay(own))
    return policy


def load_overlay(path: Path) -> Overlay:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read the seccomp policy {path}: {exc}") from exc
    return parse_overlay(text, str(path))


def parse_overlay(text: str, source: str) -> Overlay:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: {exc}") from exc
    unknown = set(data) - {"deny", "allow"}
    if unknown:
        raise PolicyError(f"{source}: unknown keys {sorted(unknown)}")
    allow = data.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(name, str) for name in allow):
        raise PolicyError(f"{source}: allow must be a list of syscall names")
    entries = data.get("deny", [])
    if not isinstance(entries, list):
        raise PolicyError(f"{source}: deny must be an array of tables")
    return Overlay(deny=tuple(_rule(entry, source) for entry in entries), allow=frozenset(allow))


def _rule(entry: Any, source: str) -> Rule:
    if not isinstance(entry, dict) or not isinstance(entry.get("syscall"), str):
        raise PolicyError(f"{source}: every deny entry needs a syscall name")
    unknown = set(entry) - {"syscall", "why", "args"}
    if unknown:
        raise PolicyError(f"{source}: {entry['syscall']}: unknown keys {sorted(unknown)}")
    args = entry.get("args", [])
    if not isinstance(args, list):
        raise PolicyError(f"{source}: {entry['syscall']}: args must be an array")
    return Rule(
        syscall=entry["syscall"],
        why=str(entry.get("why", "")),
        args=tuple(_arg(arg, source, entry["syscall"]) for arg in args),
    )


def _arg(arg: Any, source: str, syscall: str) -> ArgMatch:
    if not isinstance(arg, dict) or set(arg) - {"index", "value", "mask"} or not {"index", "value"} <= set(arg):
        raise PolicyError(f"{source}: {syscall}: an argument match is {{index, value, mask?}}")
    fields = [arg["index"], arg["value"], arg.get("mask", 0)]
    if not all(isinstance(field, int) and not isinstance(field, bool) for field in fields):
        raise PolicyError(f"{source}: {syscall}: argument match fields are integers")
    return ArgMatch(index=arg["index"], value=arg["value"], mask=arg.get("mask"))
