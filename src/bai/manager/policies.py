"""Keypair resource policies, and the limits a session gets from its keypair's policy.

A policy caps what a keypair's sessions may ask for: the slots of one session, the
slots of all its live sessions together, and the per-session limits (PIDs, scratch
space, wall time per run, idle timeout, lifetime, output per run). For each limit a
session's effective value is its request's, else the policy's; a request above the
policy's value is refused. ``None`` means no limit (for PIDs, scratch and output, the
agent's default).

The functions here are I/O free. ``PolicyRegistry`` holds the rows in memory, like the
keypairs, so creating a session reads no row; every change goes to the database first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select

from bai.common.errors import InvalidRequest, NotFound, QuotaExceeded
from bai.common.resources import Slots, format_slots, parse_size, parse_slots
from bai.common.wire import ResourcePolicyFields, SessionLimitsRequest
from bai.manager.store.db import Database
from bai.manager.store.tables import ResourcePolicyRow

DEFAULT_POLICY = "default"
POLICY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", re.ASCII)
#: the agent refuses fewer (its MIN_PIDS): a Python REPL needs a few processes
MIN_PIDS = 8
#: nor less memory than this (its MIN_MEM)
MIN_MEM = 16 * 2**20


@dataclass(frozen=True)
class ResourcePolicy:
    name: str
    total_resource_slots: Slots = field(default_factory=dict)
    max_session_slots: Slots = field(default_factory=dict)
    max_pids: int | None = None
    max_scratch_bytes: int | None = None
    exec_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    max_session_lifetime_s: float | None = None
    max_output_bytes: int | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class RequestedLimits:
    """``config.limits`` of a create request, parsed and checked for sense (not against a policy)."""

    pids: int | None = None
    scratch_bytes: int | None = None
    exec_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    max_lifetime_s: float | None = None
    output_bytes: int | None = None


@dataclass(frozen=True)
class SessionLimits:
    """The limits a session runs under: fixed at creation, kept with the session."""

    policy: str
    pids: int | None = None
    scratch_bytes: int | None = None
    exec_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    max_lifetime_s: float | None = None
    output_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionLimits:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- a create request against a policy ---------------------------------------------

#: (RequestedLimits / SessionLimits field, its wire name, the ResourcePolicy field capping it)
_LIMITS = (
    ("pids", "pids", "max_pids"),
    ("scratch_bytes", "scratch", "max_scratch_bytes"),
    ("exec_timeout_s", "execTimeout", "exec_timeout_s"),
    ("idle_timeout_s", "idleTimeout", "idle_timeout_s"),
    ("max_lifetime_s", "maxLifetime", "max_session_lifetime_s"),
    ("output_bytes", "output", "max_output_bytes"),
)


def _number(value: float | int | Decimal) -> str:
    return format(Decimal(str(value)).normalize(), "f")


Number = float | int | Decimal


def _over(where: str, value: Number, policy: ResourcePolicy, cap: Number) -> InvalidRequest:
    return InvalidRequest(
        f'{where}: {_number(value)} exceeds the keypair\'s resource policy "{policy.name}" (max {_number(cap)})',
        field=where,
    )


def _positive_seconds(value: float | None, where: str) -> float | None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise InvalidRequest(f"{where}: must be a positive number of seconds", field=where)
    return value


def _positive_size(value: str | int | None, where: str) -> int | None:
    if value is None:
        return None
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise InvalidRequest(f"{where}: {exc}", field=where) from None
    if size <= 0:
        raise InvalidRequest(f"{where}: must be more than 0 bytes", field=where)
    return size


def _pids(value: int | None, where: str) -> int | None:
    if value is not None and value < MIN_PIDS:
        raise InvalidRequest(f"{where}: must be at least {MIN_PIDS}", field=where)
    return value


def requested_limits(req: SessionLimitsRequest | None) -> RequestedLimits:
    if req is None:
        return RequestedLimits()
    at = "config.limits."
    return RequestedLimits(
        pids=_pids(req.pids, at + "pids"),
        scratch_bytes=_positive_size(req.scratch, at + "scratch"),
        exec_timeout_s=_positive_seconds(req.exec_timeout, at + "execTimeout"),
        idle_timeout_s=_positive_seconds(req.idle_timeout, at + "idleTimeout"),
        max_lifetime_s=_positive_seconds(req.max_lifetime, at + "maxLifetime"),
        output_bytes=_positive_size(req.output, at + "output"),
    )


def session_limits(
    requested: RequestedLimits, policy: ResourcePolicy, default_exec_timeout_s: float | None = None
) -> SessionLimits:
    """Each limit: the request's, else the policy's; a request above the policy is refused.
    ``default_exec_timeout_s`` (the manager's setting) applies where both are silent."""
    chosen: dict[str, Any] = {}
    for name, wire, cap_name in _LIMITS:
        value, cap = getattr(requested, name), getattr(policy, cap_name)
        if value is not None and cap is not None and value > cap:
            raise _over(f"config.limits.{wire}", value, policy, cap)
        chosen[name] = value if value is not None else cap
    if chosen["exec_timeout_s"] is None:
        chosen["exec_timeout_s"] = default_exec_timeout_s
    return SessionLimits(policy=policy.name, **chosen)


def session_slots(explicit: Slots, defaults: Slots, policy: ResourcePolicy) -> Slots:
    """The slots a session gets: what it asked for (within the policy's per-session maxima),
    the manager's defaults for the rest (lowered to those maxima)."""
    caps = policy.max_session_slots
    slots = {name: min(amount, caps.get(name, amount)) for name, amount in defaults.items()}
    for name, amount in explicit.items():
        cap = caps.get(name)
        if cap is not None and amount > cap:
            raise _over(f"config.resources.{name}", amount, policy, cap)
        slots[name] = amount
    return slots


def check_total(policy: ResourcePolicy, held: Iterable[Slots], wanted: Slots) -> None:
    """QuotaExceeded when the keypair's live sessions and the new one would hold more of a
    slot than the policy's ``total_resource_slots``."""
    held = list(held)
    for name, cap in policy.total_resource_slots.items():
        total = sum((slots.get(name, Decimal(0)) for slots in held), wanted.get(name, Decimal(0)))
        if total > cap:
            raise QuotaExceeded(
                f"config.resources.{name}: the keypair's sessions would hold {_number(total)} in total; "
                f'its resource policy "{policy.name}" allows {_number(cap)}'
            )


# -- policies from admin requests ----------------------------------------------------


def _slots(raw: dict[str, str | int | float] | None, where: str) -> Slots:
    try:
        slots = parse_slots(raw or {})
    except ValueError as exc:  # "resources.cpu: ..."
        raise InvalidRequest(f"{where}.{str(exc).removeprefix('resources.')}", field=where) from None
    if slots.get("mem", MIN_MEM) < MIN_MEM:  # no session could start under it
        raise InvalidRequest(f"{where}.mem: must be at least 16m", field=f"{where}.mem")
    return slots


_PARSERS: dict[str, Any] = {
    "total_resource_slots": _slots,
    "max_session_slots": _slots,
    "max_pids": _pids,
    "max_scratch_bytes": _positive_size,
    "exec_timeout_s": _positive_seconds,
    "idle_timeout_s": _positive_seconds,
    "max_session_lifetime_s": _positive_seconds,
    "max_output_bytes": _positive_size,
}


def policy_changes(given: ResourcePolicyFields) -> dict[str, Any]:
    """The fields an admin request sets (left-out fields are not in it), parsed and checked."""
    return {name: _PARSERS[name](getattr(given, name), name) for name in given.model_fields_set if name in _PARSERS}


def check_policy_name(name: str) -> str:
    if not POLICY_NAME_RE.match(name):
        raise InvalidRequest(
            f"name: {name!r} is not a valid policy name (1-64 letters, digits, '_', '.', '-')", field="name"
        )
    return name


def _from_row(row: ResourcePolicyRow) -> ResourcePolicy:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return ResourcePolicy(
        name=row.name,
        total_resource_slots={k: Decimal(v) for k, v in row.total_resource_slots.items()},
        max_session_slots={k: Decimal(v) for k, v in row.max_session_slots.items()},
        max_pids=row.max_pids,
        max_scratch_bytes=row.max_scratch_bytes,
        exec_timeout_s=row.exec_timeout_s,
        idle_timeout_s=row.idle_timeout_s,
        max_session_lifetime_s=row.max_session_lifetime_s,
        max_output_bytes=row.max_output_bytes,
        created_at=created,
    )


def _to_row(policy: ResourcePolicy) -> ResourcePolicyRow:
    return ResourcePolicyRow(
        name=policy.name,
        total_resource_slots=format_slots(policy.total_resource_slots),
        max_session_slots=format_slots(policy.max_session_slots),
        max_pids=policy.max_pids,
        max_scratch_bytes=policy.max_scratch_bytes,
        exec_timeout_s=policy.exec_timeout_s,
        idle_timeout_s=policy.idle_timeout_s,
        max_session_lifetime_s=policy.max_session_lifetime_s,
        max_output_bytes=policy.max_output_bytes,
        created_at=policy.created_at,
    )


class PolicyRegistry:
    """The policies, cached. Who uses a policy is the caller's business (``Manager``
    refuses to delete one in use)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, ResourcePolicy] = {}

    async def load(self) -> None:
        async with self._db.sessionmaker() as s:
            rows = (await s.scalars(select(ResourcePolicyRow))).all()
        self._cache = {row.name: _from_row(row) for row in rows}

    def all(self) -> list[ResourcePolicy]:
        return sorted(self._cache.values(), key=lambda p: p.name)

    def get(self, name: str) -> ResourcePolicy | None:
        return self._cache.get(name)

    def require(self, name: str) -> ResourcePolicy:
        """The policy a path names; NotFound otherwise."""
        policy = self._cache.get(name)
        if policy is None:
            raise NotFound(f"no such resource policy: {name!r}")
        return policy

    def named_by(self, name: str, field: str) -> ResourcePolicy:
        """The policy a request field names; InvalidRequest naming the field otherwise."""
        policy = self._cache.get(name)
        if policy is None:
            known = ", ".join(sorted(self._cache)) or "none"
            raise InvalidRequest(f"{field}: no such resource policy: {name!r} (known: {known})", field=field)
        return policy

    async def create(self, name: str, changes: dict[str, Any]) -> ResourcePolicy:
        check_policy_name(name)
        if name in self._cache:
            raise InvalidRequest(f"name: a resource policy named {name!r} already exists", field="name")
        policy = ResourcePolicy(name=name, **changes)
        await self._write(policy)
        return policy

    async def update(self, name: str, changes: dict[str, Any]) -> ResourcePolicy:
        policy = replace(self.require(name), **changes)
        await self._write(policy)
        return policy

    async def delete(self, name: str) -> None:
        self.require(name)
        async with self._db.sessionmaker() as s, s.begin():
            await s.execute(delete(ResourcePolicyRow).where(ResourcePolicyRow.name == name))
        del self._cache[name]

    async def _write(self, policy: ResourcePolicy) -> None:
        async with self._db.sessionmaker() as s, s.begin():
            await s.merge(_to_row(policy))
        self._cache[policy.name] = policy
