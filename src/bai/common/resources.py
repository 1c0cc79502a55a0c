"""Resource slots and their units.

A slot mapping is ``{"cpu": Decimal cores, "mem": Decimal bytes, "cuda.device": Decimal count}``.
Requests arrive as strings ("2", "512m", "4g"), numbers, or the v1–v3 fields
``instanceMemory`` / ``instanceCores``; everything is normalised here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

_BINARY_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
KNOWN_SLOTS = ("cpu", "mem", "cuda.device", "cuda.shares")

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
            raise ValueError(f"resources.{name}: {exc}") from None
    return slots


def format_slots(slots: Mapping[str, Decimal]) -> dict[str, str]:
    """The wire form: decimal strings, as the official manager answers."""
    return {name: format(value.normalize(), "f") for name, value in slots.items()}


def fits(request: Mapping[str, Decimal], free: Mapping[str, Decimal]) -> bool:
    return all(free.get(name, Decimal(0)) >= amount for name, amount in request.items() if amount > 0)


def subtract(a: Mapping[str, Decimal], b: Mapping[str, Decimal]) -> Slots:
    return {name: a.get(name, Decimal(0)) - b.get(name, Decimal(0)) for name in set(a) | set(b)}
