"""Per-session limits: one model, ``SessionLimits``, for every place they travel.

- a create request's ``config.limits`` (our extension; the wire names ``pids``,
  ``scratch``, ``execTimeout``, ``idleTimeout``, ``maxLifetime``, ``output``, or their
  snake_case spellings): what the session asks for, ``policy`` unset;
- the limits a session runs under, the request's else its keypair's resource policy's
  (bai.manager.policies.session_limits): kept with the session (``to_json``), shown as
  ``GET /session/{id}``'s ``limits`` (serialised with the aliases: ``resourcePolicy``,
  ``scratchBytes``, ``execTimeout``...), and turned into the agent's ``SandboxSpec``;
- a resource policy's per-session caps (``ResourcePolicy.caps``).

Sizes are bytes or strings such as "512m"; times are seconds. Each value is checked for
sense where it is parsed (a pydantic error naming the field, which the API edge and the
SDK turn into InvalidRequest); ``None`` means no limit (for PIDs, scratch and output, the
agent's default).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Final

from pydantic import AfterValidator, AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from bai.common.resources import format_bytes, parse_size

#: the agent refuses fewer: a Python REPL needs a few processes
MIN_PIDS: Final = 8


def _size(value: Any) -> int:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise PydanticCustomError("size", "expected bytes or a size such as 512m")
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise PydanticCustomError("size", str(exc)) from None
    if size <= 0:
        raise PydanticCustomError("size", "must be more than 0 bytes")
    return size


def _seconds(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise PydanticCustomError("seconds", "must be a positive number of seconds")
    return value


def _pids(value: int) -> int:
    if value < MIN_PIDS:
        raise PydanticCustomError("pids", "must be at least {min}", {"min": MIN_PIDS})
    return value


Size = Annotated[int, BeforeValidator(_size)]
Seconds = Annotated[float, AfterValidator(_seconds)]
Pids = Annotated[int, AfterValidator(_pids)]


def _wire(name: str, *others: str) -> Any:
    """A field read under its wire name and its other spellings, written under the first."""
    return Field(default=None, validation_alias=AliasChoices(name, *others), serialization_alias=name)


class SessionLimits(BaseModel):
    """See the module docstring. Frozen: a session's limits are fixed at its creation."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, serialize_by_alias=True)

    #: the resource policy the limits came from; None in a request
    policy: str | None = _wire("resourcePolicy", "policy")
    pids: Pids | None = None
    scratch_bytes: Size | None = _wire("scratchBytes", "scratch", "scratch_bytes")
    exec_timeout_s: Seconds | None = _wire("execTimeout", "exec_timeout", "exec_timeout_s")
    idle_timeout_s: Seconds | None = _wire("idleTimeout", "idle_timeout", "idle_timeout_s")
    max_lifetime_s: Seconds | None = _wire("maxLifetime", "max_lifetime", "max_lifetime_s")
    output_bytes: Size | None = _wire("outputBytes", "output", "output_bytes")

    def to_json(self) -> dict[str, Any]:
        """The stored form (``sessions.limits``): the field names."""
        return self.model_dump(by_alias=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionLimits:
        return cls.model_validate(data)


#: the limit fields (all but ``policy``), in the order errors and listings name them
LIMIT_FIELDS: Final = ("pids", "scratch_bytes", "exec_timeout_s", "idle_timeout_s", "max_lifetime_s", "output_bytes")
#: how a create request spells each (``config.limits.<name>``)
REQUEST_NAMES: Final = {
    "pids": "pids",
    "scratch_bytes": "scratch",
    "exec_timeout_s": "execTimeout",
    "idle_timeout_s": "idleTimeout",
    "max_lifetime_s": "maxLifetime",
    "output_bytes": "output",
}


def format_limit(name: str, value: float) -> str:
    """A limit's value for people: sizes in binary units, times in seconds."""
    if name.endswith("_bytes"):
        return format_bytes(int(value))
    if name.endswith("_s"):
        return f"{value:g} s"
    return str(value)
