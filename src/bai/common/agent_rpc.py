"""Manager ↔ agent models. Every call between the two carries one of these,
in process (embedded mode) or over the agent RPC (HTTP + WebSocket, authenticated
with the cluster secret)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

# [type, data]: data is text, or [mime, content] for "media" (API.md section 6)
ConsoleEntry = tuple[str, str | list[str]]


class AgentInfo(BaseModel):
    """What an agent tells the manager when it registers and on every heartbeat."""

    agent_id: str
    rpc_url: str  # "inproc://<id>" in embedded mode, else http://host:port
    backend: str  # "local" | "docker"
    capacity: dict[str, str]  # slot name → decimal string (cpu cores, mem bytes, cuda.device count)
    environments: list[str]  # the ones it can start: "name:tag", and "name" for a default tag
    version: str
    sessions: list[str] = Field(default_factory=list)  # ids of the sessions it runs now
    pool: dict[str, int] = Field(default_factory=dict)  # ready pooled sandboxes per environment
    #: what backs each session's /home/work: "hostfile" (a capped disk image), "memory" (a
    #: capped tmpfs), "hostdir" (a plain directory, no cap); None: the backend does not say
    scratch_type: str | None = None
    #: a random id of this run of the agent: a new one tells the manager that the agent
    #: restarted, and that sessions it ran and no longer lists are gone
    boot_id: str = ""
    #: environments it knows (its catalog's) but cannot start, keyed as ``environments`` is:
    #: why not, with the remedy ("not built: run `bai env build python-pytorch:2.5`")
    unavailable: dict[str, str] = Field(default_factory=dict)


class SandboxSpec(BaseModel):
    """Everything the agent needs to start one session's sandbox."""

    session_id: str
    session_name: str
    environment: str  # e.g. "python" or "python:3.11"
    resources: dict[str, str]  # normalised slots: cpu (cores), mem (bytes), ...
    environ: dict[str, str] = Field(default_factory=dict)
    exec_timeout_s: float | None = None  # wall-time limit per execution; None: none
    #: the cap on /home/work, bytes (writes past it fail with ENOSPC); None: the agent's default
    scratch_bytes: int | None = None
    #: output kept per run, bytes of stdout + stderr; past it the rest is dropped and a
    #: marker says so. None: the agent's default
    output_limit_bytes: int | None = None


class BatchSteps(BaseModel):
    """A batch run's steps as the client gave them: a command, ``"*"`` (the environment's
    default) or None / ``""`` (skipped)."""

    clean: str | None = None
    build: str | None = None
    build_log: bool = False
    exec: str | None = None


class ExecRequest(BaseModel):
    session_id: str
    mode: Literal["query", "batch", "continue", "input"]
    run_id: str | None = None
    code: str = ""
    flush_timeout_s: float = 2.0  # return what there is after this long
    batch: BatchSteps | None = None  # with mode "batch"
    script: bool = False  # with mode "query": the code is a whole file, run as a script (wire.QueryOptions)


class RunStats(BaseModel):
    """What one run used, from the sandbox's cgroup: reported with its ``finished`` answer."""

    cpu_ms: float  # user + system CPU time of every process of the sandbox during the run
    wall_ms: float  # from the Execute frame's send to the Finished frame's arrival
    mem_peak: int  # bytes: the memory high-water mark during the run
    #: "run": the peak was reset when the run started; "session": the kernel cannot reset it,
    #: so this is the session's high-water mark so far
    mem_peak_scope: Literal["run", "session"] = "run"
    output_bytes: int = 0  # stdout + stderr the run wrote, dropped output included
    output_truncated: bool = False
    oom_kills: int = 0  # processes of the run the OOM killer ended (the session lived on)


class CompleteRequest(BaseModel):
    session_id: str
    code: str
    line: str = ""
    row: int = 0
    col: int = 0


class SessionStats(BaseModel):
    """Measured usage of one session; cgroup figures, zero where the host cannot tell."""

    cpu_used_ms: int = 0
    mem_current: int = 0
    mem_max: int = 0
    mem_limit: int | None = None
    cpu_limit: str | None = None  # cores, decimal string
    io_read: int = 0
    io_write: int = 0
    net_rx: int = 0
    net_tx: int = 0
    io_scratch_size: int = 0
    oom_kills: int = 0


class SessionGone(BaseModel):
    """Agent → manager: a session's sandbox ended without being asked to (crash, OOM of the runner)."""

    session_id: str
    reason: str
    exit_code: int | None = None


class SessionRef(BaseModel):
    """The body of the agent RPC calls that name a session only (destroy, restart,
    interrupt, stats)."""

    session_id: str


class TerminalRequest(BaseModel):
    """Manager → agent: open a shell on a new pty of the session's sandbox. Over the agent
    RPC it travels in the WebSocket's query string."""

    session_id: str
    rows: int
    cols: int


class NoArguments(BaseModel):
    """The body of a call that takes none (``info``)."""


class RpcError(BaseModel):
    """The body of a failed agent RPC call: ``error`` is the class name of the
    bai.common.errors exception the agent raised, so the caller can raise it again."""

    error: str
    message: str
    field: str | None = None
    data: Any = None


class FileUpload(BaseModel):
    """Manager → agent: one file for a session's /home/work. The content follows as
    the call's (streamed) body; over the agent RPC this model travels in the
    ``X-BAI-Args`` header."""

    session_id: str
    path: str  # relative to /home/work, already checked by bai.common.workpaths
    max_bytes: int  # the content is refused past this many bytes


class FileDownload(BaseModel):
    """Manager → agent: files and directories of a session's /home/work, answered as
    ``multipart/mixed`` with one tar per path."""

    session_id: str
    paths: list[str]
    max_bytes: int  # the sum of the regular files' sizes


class FileListRequest(BaseModel):
    session_id: str
    path: str = ""  # relative to /home/work; "": /home/work itself
    max_entries: int = 10000


class FileEntry(BaseModel):
    """One directory entry, as the official client's ``session ls`` reads it
    (``filename``, ``size``, ``mode`` as ``ls -l`` writes it, ``mtime`` in epoch
    seconds) plus ``type``. Links are described, never followed."""

    filename: str
    type: Literal["file", "dir", "link", "other"]
    size: int
    mode: str
    mtime: float
    ctime: float
    atime: float


class FileListing(BaseModel):
    path: str
    entries: list[FileEntry]
    truncated: bool = False  # more entries than ``max_entries``


@dataclass
class ByteStream:
    """A streamed answer (a download): its media type and its body, chunk by chunk.
    Not a wire model: over the agent RPC it is the HTTP answer itself."""

    media_type: str
    chunks: AsyncIterator[bytes]
