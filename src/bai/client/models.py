"""The answers the SDK reads that ``bai.common.wire`` does not model yet.

They follow API.md sections 1, 2, 5 and 6 and the manager's contract for our
extensions (``GET /session``, ``/admin/keypairs``). Unknown keys are ignored so
that a newer server does not break an older client.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bai.common.errors import InvalidRequest
from bai.common.status import RunStatus
from bai.common.wire import (
    KeypairInfo,
    ResourcePolicyInfo,
    RunResult,
    SessionEventData,
    SessionInfo,
    StatMetric,
)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ServerVersion(_Answer):
    """``GET /``."""

    version: str
    manager: str = ""


class AuthTestResult(_Answer):
    """``POST /auth/test``."""

    authorized: str
    echo: str


class SessionList(_Answer):
    """``GET /session``."""

    items: list[SessionInfo]


class KeypairList(_Answer):
    """``GET /admin/keypairs``."""

    items: list[KeypairInfo]


class PolicyList(_Answer):
    """``GET /admin/resource-policies``."""

    items: list[ResourcePolicyInfo]


class SessionStats(_Answer):
    """The ``stats`` of a destroy answer: ``version``, ``status`` and one StatMetric per metric.

    On the wire the metrics sit beside ``version`` and ``status``
    (``{"version": 2, "status": "terminated", "cpu_used": {...}, ...}``); here
    they are gathered under ``metrics``. ``to_wire()`` gives the flat form back.
    """

    version: int
    status: str
    metrics: dict[str, StatMetric] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_metrics(cls, value: Any) -> Any:
        if not isinstance(value, dict) or "metrics" in value:
            return value
        metrics = {key: item for key, item in value.items() if isinstance(item, dict)}
        rest = {key: item for key, item in value.items() if key not in metrics}
        return {**rest, "metrics": metrics}

    def to_wire(self) -> dict[str, Any]:
        flat: dict[str, Any] = {"version": self.version, "status": self.status}
        for name, metric in self.metrics.items():
            flat[name] = metric.model_dump(by_alias=True, exclude_none=True)
        return flat

    def number(self, metric: str, field: Literal["current", "stats_max"] = "current") -> float | None:
        """A metric's value as a number; None when absent or not numeric."""
        item = self.metrics.get(metric)
        text = getattr(item, field, None) if item is not None else None
        try:
            return float(text) if text is not None else None
        except ValueError:
            return None


class DestroyAnswer(_Answer):
    """``DELETE /session/{id}``."""

    stats: SessionStats


class ExecuteAnswer(_Answer):
    """``POST /session/{id}``."""

    result: RunResult


class CompletionResult(_Answer):
    """The ``result`` of ``POST /session/{id}/complete``."""

    status: str
    completions: list[str] = Field(default_factory=list)


class CompleteAnswer(_Answer):
    result: CompletionResult


StreamStatus = RunStatus | Literal["error"]


class StreamFrame(RunResult):
    """One server frame of the streaming execute WebSocket (API.md section 6): a run's
    answer without ``runId``, or ``status: "error"`` with ``msg``.

    ``console`` holds ``[type, data]`` pairs: ``stdout``/``stderr``/``log``/``html``
    carry text, ``media`` carries ``[mime, content]``.
    """

    model_config = ConfigDict(extra="ignore")

    status: StreamStatus  # type: ignore[assignment]  # a run's statuses, and "error"
    msg: str | None = None


Body = TypeVar("Body", bound=BaseModel)


def request_body(model: type[Body], **fields: Any) -> Body:
    """Build a request model, raising InvalidRequest (naming the field) before anything is sent."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        where = f"{field}: " if field else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"{where}{message}", field=field) from exc


class SessionEvent(BaseModel):
    """One lifecycle event: its name (``session_started``...) and its data."""

    name: str
    data: SessionEventData


class SessionFile(_Answer):
    """One entry of ``GET /session/{id}/files`` (API.md section 5). ``type`` is ours;
    Backend.AI's own server leaves it out."""

    filename: str
    size: int
    mode: str
    mtime: float
    type: Literal["file", "dir", "link", "other"] | None = None


class FileList(_Answer):
    """``GET /session/{id}/files``; ``files`` arrives as a JSON string of entries."""

    files: list[SessionFile]
    folder_path: str = ""
    errors: str | None = None
    truncated: bool = False

    @model_validator(mode="before")
    @classmethod
    def _files_from_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("files"), str):
            return {**data, "files": json.loads(data["files"])}
        return data
