"""Client ↔ manager models: the Backend.AI wire API (API.md sections 5 and 6).

Request models ignore unknown keys and accept the camelCase and snake_case
spellings of every field; ``None`` means "not given" for every optional field,
because the official client sends explicit nulls.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from bai.common.agent_rpc import RunStats

SESSION_NAME_RE = re.compile(r"^(?=.{4,64}$)\w[\w.-]*\w$", re.ASCII)

SessionStatus = Literal[
    "PENDING",
    "SCHEDULED",
    "PREPARING",
    "RUNNING",
    "RESTARTING",
    "TERMINATING",
    "TERMINATED",
    "ERROR",
    "CANCELLED",
]
RunStatus = Literal[
    "continued", "waiting-input", "clean-finished", "build-finished", "finished", "exec-timeout"
]
ExecMode = Literal["query", "batch", "continue", "input", "complete"]


def _alias(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SessionConfig(_Lenient):
    resources: dict[str, Any] | None = None
    resource_opts: dict[str, Any] | None = _alias("resource_opts", "resourceOpts")
    environ: dict[str, str] | None = _alias("environ", "envs")
    mounts: list[str] | None = None
    mount_map: dict[str, str] | None = _alias("mount_map", "mountMap")
    scaling_group: str | None = _alias("scalingGroup", "scaling_group")
    preopen_ports: list[int] | None = _alias("preopen_ports", "preopenPorts")
    instance_memory: str | int | float | None = _alias("instanceMemory", "instance_memory")
    instance_cores: str | int | float | None = _alias("instanceCores", "instance_cores")


class CreateSessionRequest(_Lenient):
    name: str | None = _alias("name", "session_name", "sessionName", "clientSessionToken")
    image: str | None = _alias("image", "lang")
    type: Literal["interactive", "batch"] | None = _alias("type", "sessionType", "session_type")
    tag: str | None = None
    group: str | None = _alias("group", "group_name", "groupName")
    domain: str | None = _alias("domain", "domain_name", "domainName")
    enqueue_only: bool | None = _alias("enqueueOnly", "enqueue_only")
    max_wait_seconds: int | None = _alias("maxWaitSeconds", "max_wait_seconds")
    reuse_if_exists: bool | None = _alias("reuseIfExists", "reuse_if_exists")
    startup_command: str | None = _alias("startupCommand", "startup_command")
    bootstrap_script: str | None = _alias("bootstrap_script", "bootstrapScript")
    owner_access_key: str | None = _alias("owner_access_key", "ownerAccessKey")
    architecture: str | None = None
    cluster_size: int | None = _alias("clusterSize", "cluster_size")
    cluster_mode: str | None = _alias("clusterMode", "cluster_mode")
    config: SessionConfig | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not SESSION_NAME_RE.match(value):
            raise ValueError(
                "must be 4 to 64 characters of letters, digits, '_', '-' or '.', "
                "starting and ending with a letter, digit or '_'"
            )
        return value

    @field_validator("max_wait_seconds")
    @classmethod
    def _check_wait(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("must be 0 (wait forever) or a positive number of seconds")
        return value


class CreateSessionResponse(BaseModel):
    sessionId: str
    sessionName: str
    kernelId: str
    status: str
    servicePorts: list[Any] = Field(default_factory=list)
    created: bool


class SessionInfo(BaseModel):
    sessionId: str
    sessionName: str
    image: str
    lang: str
    type: str
    tag: str | None
    status: str
    statusInfo: str | None
    age: int
    creationTime: str
    terminationTime: str | None
    agent: str | None
    occupiedSlots: dict[str, str]
    requestedSlots: dict[str, str]
    environ: dict[str, str]
    numQueriesExecuted: int
    lastStat: dict[str, Any] | None


class ExecuteRequest(_Lenient):
    mode: ExecMode = "query"
    run_id: str | None = _alias("runId", "run_id")
    code: str = ""
    options: dict[str, Any] | None = None


class BatchOptions(_Lenient):
    clean: str | None = None
    build: str | None = None
    build_log: bool = Field(default=False, validation_alias=AliasChoices("buildLog", "build_log"))
    exec: str | None = None


class CompleteOptions(_Lenient):
    row: int = 0
    col: int = 0
    line: str = ""
    post: str = ""


ConsoleItem = tuple[str, Any]


class RunResult(BaseModel):
    """The ``result`` object of an execute answer."""

    runId: str | None = None
    status: RunStatus
    exitCode: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    files: list[Any] = Field(default_factory=list)
    console: list[ConsoleItem] = Field(default_factory=list)

    @property
    def stats(self) -> RunStats | None:
        """What the run used (``options.stats``, with its ``finished`` or ``exec-timeout``
        answer only); None when absent or not understood."""
        return run_stats_of(self.options)


def run_stats_of(options: dict[str, Any] | None) -> RunStats | None:
    """``options.stats`` of an execute answer or stream frame, as RunStats; None when
    absent or malformed (an older or foreign server)."""
    raw = options.get("stats") if options else None
    if not isinstance(raw, dict):
        return None
    try:
        return RunStats.model_validate(raw)
    except ValidationError:
        return None


class StatMetric(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    current: str
    capacity: str | None = None
    pct: str | None = None
    unit_hint: str
    stats_max: str | None = Field(
        default=None, validation_alias=AliasChoices("stats.max", "stats_max"), serialization_alias="stats.max"
    )


class UsageStats(BaseModel):
    """A session's usage in the Backend.AI shape: destroy's ``stats`` and info's ``lastStat``.
    Dump with ``by_alias=True`` (``stats.max``) and ``exclude_none=True``."""

    version: int = 2
    status: str  # "terminated" at destroy, "live" while running; the official CLI needs it
    cpu_used: StatMetric
    mem: StatMetric
    io_read: StatMetric
    io_write: StatMetric
    net_rx: StatMetric
    net_tx: StatMetric
    io_scratch_size: StatMetric


class SessionEventData(BaseModel):
    """The ``data`` of one server-sent lifecycle event (API.md section 7)."""

    reason: str = ""
    sessionName: str
    ownerAccessKey: str
    sessionId: str
    exitCode: int | None = None
    kernelId: str


class KeypairInfo(BaseModel):
    access_key: str
    user_id: str
    is_admin: bool
    is_active: bool
    concurrency_limit: int
    rate_limit: int
    created_at: str
    expires_at: str | None = None
    num_sessions: int = 0


class KeypairCreated(KeypairInfo):
    secret_key: str


class KeypairCreateRequest(_Lenient):
    user_id: str = Field(default="user", validation_alias=AliasChoices("user_id", "userId"))
    is_admin: bool = Field(default=False, validation_alias=AliasChoices("is_admin", "isAdmin"))
    concurrency_limit: int = Field(
        default=30, ge=1, validation_alias=AliasChoices("concurrency_limit", "concurrencyLimit")
    )
    rate_limit: int = Field(default=10000, ge=1, validation_alias=AliasChoices("rate_limit", "rateLimit"))
    expires_at: datetime | None = Field(default=None, validation_alias=AliasChoices("expires_at", "expiresAt"))
