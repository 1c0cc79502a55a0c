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

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, select

from bai.common.errors import InvalidRequest, NotFound, QuotaExceeded
from bai.common.limits import LIMIT_FIELDS, REQUEST_NAMES, Pids, Seconds, SessionLimits, Size, format_limit
from bai.common.resources import Slots, format_amount, format_slots, parse_slots
from bai.common.wire import ResourcePolicyFields
from bai.manager.store.db import Database
from bai.manager.store.tables import ResourcePolicyRow

DEFAULT_POLICY = "default"
POLICY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", re.ASCII)
#: the agent refuses less memory than this (its MIN_MEM)
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

    @property
    def caps(self) -> SessionLimits:
        """The policy's per-session limits, in the one limits model."""
        return SessionLimits.model_validate({
            "policy": self.name,
            "pids": self.max_pids,
            "scratch_bytes": self.max_scratch_bytes,
            "exec_timeout_s": self.exec_timeout_s,
            "idle_timeout_s": self.idle_timeout_s,
            "max_lifetime_s": self.max_session_lifetime_s,
            "output_bytes": self.max_output_bytes,
        })


# -- a create request against a policy ---------------------------------------------


def _over(where: str, value: str, policy: ResourcePolicy, cap: str) -> InvalidRequest:
    return InvalidRequest(
        f'{where}: {value} exceeds the keypair\'s resource policy "{policy.name}" (max {cap})', field=where
    )


def session_limits(
    requested: SessionLimits, policy: ResourcePolicy, default_exec_timeout_s: float | None = None
) -> SessionLimits:
    """Each limit: the request's, else the policy's; a request above the policy is refused
    (naming ``config.limits.<its wire name>``, in bytes or seconds as people write them).
    ``default_exec_timeout_s`` (the manager's setting) applies where both are silent."""
    caps = policy.caps
    chosen: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        value, cap = getattr(requested, name), getattr(caps, name)
        if value is not None and cap is not None and value > cap:
            where = f"config.limits.{REQUEST_NAMES[name]}"
            raise _over(where, format_limit(name, value), policy, format_limit(name, cap))
        chosen[name] = value if value is not None else cap
    if chosen["exec_timeout_s"] is None:
        chosen["exec_timeout_s"] = default_exec_timeout_s
    return SessionLimits.model_validate({"policy": policy.name, **chosen})


def session_slots(explicit: Slots, defaults: Slots, policy: ResourcePolicy) -> Slots:
    """The slots a session gets: what it asked for (within the policy's per-session maxima),
    the manager's defaults for the rest (lowered to those maxima)."""
    caps = policy.max_session_slots
    slots = {name: min(amount, caps.get(name, amount)) for name, amount in defaults.items()}
    for name, amount in explicit.items():
        cap = caps.get(name)
        if cap is not None and amount > cap:
            raise _over(f"config.resources.{name}", format_amount(name, amount), policy, format_amount(name, cap))
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
                f"config.resources.{name}: the keypair's sessions would hold {format_amount(name, total)} in total; "
                f'its resource policy "{policy.name}" allows {format_amount(name, cap)}'
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


def _checked(kind: Any) -> Callable[[Any, str], Any]:
    """A policy field's parser: the same check as the limit it caps (bai.common.limits)."""
    adapter: TypeAdapter[Any] = TypeAdapter(kind)

    def parse(value: Any, where: str) -> Any:
        if value is None:
            return None
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            raise InvalidRequest(f"{where}: {exc.errors()[0]['msg']}", field=where) from None

    return parse


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "total_resource_slots": _slots,
    "max_session_slots": _slots,
    "max_pids": _checked(Pids),
    "max_scratch_bytes": _checked(Size),
    "exec_timeout_s": _checked(Seconds),
    "idle_timeout_s": _checked(Seconds),
    "max_session_lifetime_s": _checked(Seconds),
    "max_output_bytes": _checked(Size),
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
