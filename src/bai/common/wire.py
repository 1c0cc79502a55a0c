"""Client ↔ manager models: the Backend.AI wire API (API.md sections 5 and 6).

Request models ignore unknown keys and accept the camelCase and snake_case
spellings of every field; ``None`` means "not given" for every optional field,
because the official client sends explicit nulls.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_serializer,
)

from bai.common.agent_rpc import RunStats
from bai.common.limits import SessionLimits
from bai.common.status import RunStatus

SESSION_NAME_RE = re.compile(r"^(?=.{4,64}$)\w[\w.-]*\w$", re.ASCII)

ExecMode = Literal["query", "batch", "continue", "input", "complete"]


def _alias(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SessionConfig(_Lenient):
    #: our extension: per-session limits within the keypair's resource policy
    limits: SessionLimits | None = None
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
    #: our extension: the limits the session runs under (None from servers without them)
    limits: SessionLimits | None = None


class ExecuteRequest(_Lenient):
    mode: ExecMode = "query"
    run_id: str | None = _alias("runId", "run_id")
    code: str = ""
    options: dict[str, Any] | None = None


class QueryOptions(_Lenient):
    """A query's ``options``: our extension (Backend.AI's query mode reads none). ``script``:
    the code is a whole file (``bai run FILE``), run as a script: no value of a final
    expression is displayed, where interactive code (``-c``) displays it as at a prompt."""

    script: bool = False


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


def _stats_or_none(value: Any, handler: ValidatorFunctionWrapHandler) -> RunStats | None:
    """``options.stats`` as RunStats; None when absent or malformed (an older or foreign server)."""
    try:
        stats: RunStats | None = handler(value)
    except ValidationError:
        return None
    return stats


class RunOptions(BaseModel):
    """``result.options``: ``is_password`` with a ``waiting-input`` answer, ``stats`` (what
    the run used, our extension) with an ended run's answer. Keys a foreign server adds are
    kept; absent ones are not written."""

    model_config = ConfigDict(extra="allow")

    is_password: bool | None = None
    stats: Annotated[RunStats | None, WrapValidator(_stats_or_none)] = None

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class RunResult(BaseModel):
    """One answer about a run, in one shape from where it is made to where it is read: the
    agent's run book cuts it (bai.agent.runs), the agent RPC's ``execute`` carries it, the
    manager writes it as the execute answer's ``result`` (and, without ``runId``, as a
    streaming execute frame), and the SDK reads it back (API.md section 6). Python names
    are snake_case; it is written with the wire's names (``runId``, ``exitCode``)."""

    model_config = ConfigDict(serialize_by_alias=True)

    run_id: str | None = Field(default=None, validation_alias=AliasChoices("runId", "run_id"),
                               serialization_alias="runId")
    status: RunStatus
    exit_code: int | None = Field(default=None, validation_alias=AliasChoices("exitCode", "exit_code"),
                                  serialization_alias="exitCode")
    options: RunOptions = Field(default_factory=RunOptions)
    files: list[Any] = Field(default_factory=list)
    console: list[ConsoleItem] = Field(default_factory=list)

    @field_validator("options", "files", "console", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        """Servers of other versions write ``null`` for an empty one."""
        if value is None:
            return {} if info.field_name == "options" else []
        return value

    @property
    def stats(self) -> RunStats | None:
        """What the run used, with its ``finished`` or ``exec-timeout`` answer only."""
        return self.options.stats

    @property
    def is_password(self) -> bool:
        """With ``waiting-input``: whether the prompt asks for a password (no echo)."""
        return bool(self.options.is_password)


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
    resource_policy: str = "default"


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
    resource_policy: str = Field(default="default", validation_alias=AliasChoices("resource_policy", "resourcePolicy"))


class KeypairUpdateRequest(_Lenient):
    """``PATCH /admin/keypairs/{access_key}``."""

    resource_policy: str = Field(validation_alias=AliasChoices("resource_policy", "resourcePolicy"))


SizeValue = str | int
SlotValues = dict[str, str | int | float]


class ResourcePolicyInfo(BaseModel):
    """A keypair resource policy (``/admin/resource-policies``). Null: no limit (or, for
    pids, scratch and output, the agent's default)."""

    name: str
    #: the most a keypair's live sessions may hold together, per slot; {}: no limit
    total_resource_slots: dict[str, str] = Field(default_factory=dict)
    #: the most one session may request, per slot; {}: no limit
    max_session_slots: dict[str, str] = Field(default_factory=dict)
    max_pids: int | None = None
    max_scratch_bytes: int | None = None
    exec_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    max_session_lifetime_s: float | None = None
    max_output_bytes: int | None = None
    created_at: str | None = None
    num_keypairs: int = 0


class ResourcePolicyFields(_Lenient):
    """The settable fields of a policy; in an update, a field given as null removes that limit
    and a field left out keeps its value (see ``model_fields_set``)."""

    total_resource_slots: SlotValues | None = _alias("total_resource_slots", "totalResourceSlots")
    max_session_slots: SlotValues | None = _alias("max_session_slots", "maxSessionSlots")
    max_pids: int | None = _alias("max_pids", "maxPids")
    max_scratch_bytes: SizeValue | None = _alias("max_scratch_bytes", "maxScratchBytes")
    exec_timeout_s: float | None = _alias("exec_timeout_s", "execTimeout")
    idle_timeout_s: float | None = _alias("idle_timeout_s", "idleTimeout")
    max_session_lifetime_s: float | None = _alias("max_session_lifetime_s", "maxSessionLifetime")
    max_output_bytes: SizeValue | None = _alias("max_output_bytes", "maxOutputBytes")


class ResourcePolicyCreateRequest(ResourcePolicyFields):
    name: str


class AgentStatus(BaseModel):
    """One agent as ``GET /admin/agents`` lists it (bai's own admin route)."""

    agent_id: str
    status: Literal["ALIVE", "LOST"]
    backend: str
    version: str
    rpc_url: str
    environments: list[str]
    capacity: dict[str, str]  # schedulable slots (hardware × overcommit), decimal strings
    occupied: dict[str, str]  # what its live sessions requested
    sessions: int
    pool: dict[str, int]  # ready pooled sandboxes per environment
    last_heartbeat_s: float  # seconds since its last heartbeat


class AgentList(BaseModel):
    items: list[AgentStatus]


class EnvironmentOffer(BaseModel):
    """One environment as ``GET /environments`` lists it: the live agents that can start
    it and, for the others that know it, why they cannot."""

    name: str
    tag: str | None  # None: agents that name it without a tag
    available: bool  # some live agent can start it
    agents: list[str]  # the live agents that can start it
    unavailable: dict[str, str] = Field(default_factory=dict)  # agent id → why not, and the remedy


class EnvironmentList(BaseModel):
    items: list[EnvironmentOffer]
