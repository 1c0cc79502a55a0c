"""The agent's settings: parsed once by the caller (``bai agent`` or the embedded
server) from ``BAI_AGENT_*`` variables and flags, then passed in."""

from __future__ import annotations

import os
import re
import socket
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _default_environments_base() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/bai")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bai"


def _default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/bai/agent")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bai" / "agent"


class AgentConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAI_AGENT_", extra="ignore", frozen=True)

    agent_id: str = Field(default_factory=lambda: f"agent-{socket.gethostname()}", pattern=r"^[\w.-]{1,64}$")
    data_dir: Path = Field(default_factory=_default_data_dir)
    backend: str = "local"
    #: built environments (venvs) live in <environments_base>/environments/<name>-<tag>: one
    #: place per host, shared by every agent on it and by ``bai env build``, whatever their data dirs
    environments_base: Path = Field(default_factory=_default_environments_base)

    # -- local backend ------------------------------------------------------
    bwrap_path: str = "/usr/bin/bwrap"
    runner_python: str = "/usr/bin/python3"
    runner_dir: Path | None = None  # None: the installed bai.runner package
    #: the environment catalog (docs/environments.md); None: the one shipped with bai
    environment_catalog: Path | None = None
    cgroup_driver: Literal["auto", "v1", "v2", "none"] = "auto"
    # host uids for sandboxes: uid_base + slot, one slot per live session
    sandbox_uid_base: int = Field(default=1_000_000, ge=1000)
    sandbox_uid_count: int = Field(default=65_536, ge=1)
    tmp_size: int = 256 * 2**20  # the private /tmp's size cap, bytes
    #: each session's /home/work (bai.agent.scratch): "hostfile" a loop-mounted ext4 image per
    #: session, "memory" a tmpfs charged to the session's memory, "hostdir" a plain directory
    #: with no cap; "auto": hostfile where the host allows it (root, loop devices, mkfs.ext4),
    #: else hostdir with a warning
    scratch_type: Literal["auto", "hostfile", "memory", "hostdir"] = "auto"
    #: the /home/work cap of a session that asks for none (SandboxSpec.scratch_bytes), bytes
    scratch_size: int = Field(default=2**30, ge=8 * 2**20, le=2**44)
    #: the syscall filter (bai.agent.seccomp): off only for measurements and debugging
    seccomp: bool = True
    #: an overlay on the default policy for every environment (TOML: [[deny]] entries, allow = [...])
    seccomp_overlay: Path | None = None
    #: a dir of per-environment overlays, ``<environment>.toml``, applied after seccomp_overlay
    seccomp_environment_dir: Path | None = None

    #: NVIDIA GPUs offered as ``cuda.device`` slots (bai.agent.gpu): "auto" finds them through
    #: NVML or nvidia-smi, "off" offers none
    gpus: Literal["auto", "off"] = "auto"
    #: pretend the host has this many GPUs (their nodes are files in the agent's share root):
    #: scheduling, allocation and isolation tests on machines without one
    fake_gpus: int = Field(default=0, ge=0, le=64)

    # -- docker backend (bai.agent.backends.docker.backend) ----------------------------
    #: the Docker engine's address ("unix:///var/run/docker.sock", "tcp://..."); None: DOCKER_HOST or the default socket
    docker_url: str | None = None
    #: Docker's init (tini, ``docker run --init``) as each container's PID 1 above the runner.
    #: Off: the runner is PID 1, as in the local sandbox: it reaps orphans itself, and a
    #: namespace's PID 1 cannot be killed from inside, where under an init the user's code
    #: (same uid) could kill the runner
    docker_init: bool = False
    #: how a container gets its GPUs: "toolkit" a device request to the NVIDIA container toolkit
    #: (its nodes and the driver's libraries injected by the toolkit); "binds" the device nodes
    #: and the host driver's libraries and tools bound read-only by the agent; "auto": the
    #: toolkit where the engine has it (an nvidia runtime, or nvidia-container-cli on the host)
    docker_gpus: Literal["auto", "toolkit", "binds"] = "auto"
    #: how long a container's runner waits for its agent to come back when the agent's
    #: socket closes without a Shutdown (a crash or restart): the next agent on this data
    #: dir re-attaches the session within that window; 0: the session dies with its agent
    docker_reattach_s: float = Field(default=600.0, ge=0)
    #: on stop, leave the Docker backend's sessions running for the next agent start to
    #: re-attach (an upgrade in place), instead of destroying them
    keep_sessions: bool = False

    # -- sessions -----------------------------------------------------------
    default_cpu: Decimal = Decimal(1)
    default_mem: int = 2**30
    default_pids: int = 512
    #: how many times its hardware the agent offers for scheduling. Session limits are
    #: ceilings enforced by the cgroup, not reservations of idle hardware: a REPL waiting
    #: for its next query uses no CPU and a few MiB. See docs/decisions/0005.
    cpu_overcommit: Decimal = Field(default=Decimal(4), ge=1)
    mem_overcommit: Decimal = Field(default=Decimal(2), ge=1)
    #: modules every Python sandbox's runner imports before it forks the REPL, so that a
    #: session claimed from the pool finds them loaded ("json,re"); each costs CPU per
    #: sandbox start (json + re: about 3 ms) and little memory (pages shared with the REPL)
    python_preload: str = ""
    #: ready sandboxes kept per environment (bai.agent.pool); 0 starts every session cold
    pool_size: int = Field(default=2, ge=0)
    #: the pool holds nothing while the host's MemAvailable is under this (bytes; 0: no check)
    pool_min_available_mem: int = Field(default=512 * 2**20, ge=0)
    startup_timeout_s: float = 15.0
    shutdown_grace_s: float = 1.0
    max_backlog_bytes: int = 4 * 2**20  # stop reading a runner while this much output is undelivered
    #: stdout + stderr bytes kept per run when the session's spec sets no output_limit_bytes;
    #: past it the rest is dropped and a marker line says so
    output_limit: int = Field(default=8 * 2**20, ge=0)

    # -- RPC and manager ----------------------------------------------------
    rpc_host: str = "127.0.0.1"
    rpc_port: int = 6011
    rpc_url: str | None = None  # advertised; None: inproc://<agent_id> (embedded) or http://host:port
    manager_url: str | None = None
    cluster_secret: SecretStr | None = None
    heartbeat_interval_s: float = 10.0

    @field_validator("python_preload")
    @classmethod
    def _module_names(cls, value: str) -> str:
        names = [part.strip() for part in value.split(",") if part.strip()]
        bad = [name for name in names if not MODULE_RE.match(name)]
        if bad:
            raise ValueError(f"not module names: {', '.join(map(repr, bad))}")
        return ",".join(names)

    @property
    def preload_modules(self) -> tuple[str, ...]:
        return tuple(filter(None, self.python_preload.split(",")))

    @property
    def advertised_url(self) -> str:
        if self.rpc_url:
            return self.rpc_url
        if self.manager_url:
            return f"http://{self.rpc_host}:{self.rpc_port}"
        return f"inproc://{self.agent_id}"
