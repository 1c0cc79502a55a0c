"""Resource slots and their units.

A slot mapping is ``{"cpu": Decimal cores, "mem": Decimal bytes, "cuda.device": Decimal count}``.
Requests arrive as strings ("2", "512m", "4g"), numbers, or the v1–v3 fields
``instanceMemory`` / ``instanceCores``; everything is normalised here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation

_BINARY_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
KNOWN_SLOTS = ("cpu", "mem", "cuda.device", "cuda.shares")
#: names people type for a slot, and the slot they mean (difflib finds the near misses)
SLOT_ALIASES = {
    "gpu": "cuda.device",
    "gpus": "cuda.device",
    "cuda": "cuda.device",
    "fgpu": "cuda.shares",
    "memory": "mem",
    "ram": "mem",
    "cpus": "cpu",
    "cores": "cpu",
}
_BYTE_UNITS = (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))

Slots = dict[str, Decimal]


def parse_size(value: str | int | float) -> int:
    """Parse a byte size: 1024, "512m", "4g", "1.5GiB". Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("a size cannot be a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(f"not a size: {value!r} (use bytes or a number with k, m, g, t)")
    number, unit = match.groups()
    return int(Decimal(number) * _BINARY_UNITS[unit.lower()])


def parse_amount(value: str | int | float) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("an amount cannot be a boolean")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"not a non-negative number: {value!r}")
    return amount


def parse_slots(raw: Mapping[str, object]) -> Slots:
    """Normalise a ``config.resources`` mapping. Raises ValueError naming the slot."""
    slots: Slots = {}
    for name, value in raw.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(f"resources.{name}: expected a number or a string")
        try:
            slots[name] = Decimal(parse_size(value)) if name == "mem" else parse_amount(value)
        except ValueError as exc:
            if name not in KNOWN_SLOTS and suggest_slot(name, KNOWN_SLOTS):  # "memory": "4g"
                raise ValueError(f"resources.{name}: {unknown_slot(name, KNOWN_SLOTS)}") from None
            raise ValueError(f"resources.{name}: {exc}") from None
    return slots


def format_slots(slots: Mapping[str, Decimal]) -> dict[str, str]:
    """The wire form: decimal strings, as the official manager answers."""
    return {name: format(value.normalize(), "f") for name, value in slots.items()}


def fits(request: Mapping[str, Decimal], free: Mapping[str, Decimal]) -> bool:
    return all(free.get(name, Decimal(0)) >= amount for name, amount in request.items() if amount > 0)


def subtract(a: Mapping[str, Decimal], b: Mapping[str, Decimal]) -> Slots:
    return {name: a.get(name, Decimal(0)) - b.get(name, Decimal(0)) for name in set(a) | set(b)}


def format_bytes(size: int | Decimal) -> str:
    """A byte count for people: "32 GiB", "1.5 MiB", "100 bytes"."""
    for unit, scale in _BYTE_UNITS:
        if size >= scale:
            return f"{_trimmed(Decimal(size) / scale)} {unit}"
    return f"{int(size)} bytes"


def format_amount(slot: str, amount: Decimal) -> str:
    """One slot's amount for people: ``mem`` in binary units, the others as numbers."""
    return format_bytes(amount) if slot == "mem" else format(amount.normalize(), "f")


def _trimmed(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.01")).normalize(), "f")


def unknown_slot(name: str, known: Iterable[str]) -> str:
    """What to tell someone who asked for a slot nobody knows (after "resources.<name>: ")."""
    known = list(known)
    guess = suggest_slot(name, known)
    hint = f"did you mean {guess!r}? " if guess else ""
    return f"unknown resource slot {name!r} ({hint}known slots: {', '.join(known)})"


def suggest_slot(name: str, known: Iterable[str]) -> str | None:
    """The known slot an unknown ``name`` most likely means: an alias ("gpu" →
    "cuda.device"), else the closest spelling; None when nothing is close."""
    known = list(known)
    alias = SLOT_ALIASES.get(name.lower())
    if alias in known:
        return alias
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    return close[0] if close else None
