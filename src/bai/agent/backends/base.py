"""The backend interface: how the agent gets sandboxes, and a registry by name.

A ``Backend`` (one per agent) makes ``Sandbox`` es (one per session). A sandbox
starts the runner as its first process and hands the agent a connected stream
socket to it; everything above the socket (frames, runs, flush timeouts) is the
agent's (bai.agent.session), so every backend speaks to the same runner.

The registry (name → class) is ``bai.agent.backends.BACKENDS``.

Callers: ``Agent`` (bai.agent.agent) is the only caller of everything here.
Errors: ``BackendUnavailable`` from ``start``; otherwise ``SessionCreationFailed``,
``SessionRestartFailed``, ``SessionDestructionFailed`` (bai.common.errors), with the
lower-level exception chained.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from decimal import Decimal
from typing import ClassVar

from bai.agent.cgroups import CgroupDriver, Limits, RunMeter, RunUsage
from bai.agent.config import AgentConfig
from bai.agent.files import WorkDir
from bai.common.agent_rpc import BatchSteps, SandboxSpec, SessionStats
from bai.common.errors import InvalidRequest, ServiceUnavailable, SessionCreationFailed
from bai.runner import protocol


class BackendUnavailable(ServiceUnavailable):
    """The backend cannot run on this host (a tool, a permission or a cgroup missing).
    Raised by ``Backend.start``."""


class Sandbox(ABC):
    """One session's sandbox, from its start to its destruction."""

    session_id: str
    limits: Limits

    @property
    @abstractmethod
    def runner_socket(self) -> socket.socket:
        """The agent's end of the runner's socket; a fresh one after each ``restart``.
        Agent.create_session / restart_session wrap it into a RunnerConnection."""

    @abstractmethod
    def runner_started(self) -> None:
        """The runner sent Ready. Called by the agent once per start: the backend
        protects the runner (not the user's code) from the OOM killer."""

    @abstractmethod
    def oom_watch_fd(self) -> int | None:
        """A file descriptor that turns readable when the OOM killer kills in this
        sandbox, or None. The agent watches it with its event loop, calls
        ``drain_oom_watch`` when readable, then ``oom_kills``. The sandbox closes it."""

    @abstractmethod
    def drain_oom_watch(self) -> bool:
        """Consume the readiness of ``oom_watch_fd``: True when an OOM kill was
        signalled since the last call. A non-blocking read of an event counter, no
        cgroup file: the agent also calls it when a run finishes."""

    @abstractmethod
    def oom_kills(self) -> int:
        """OOM kills so far in this sandbox (a cgroup read: not for the execute path).
        Called by the agent after an OOM notification or an abnormal end of a run."""

    def begin_run(self) -> None:
        """A run starts: note the CPU counter and reset the memory peak. Called by
        Session.execute just before it sends Execute, on the event loop: a backend does
        no more than a few reads and writes on file descriptors it keeps open. Raises
        OSError when the sandbox's accounting is gone (the caller then reports no figures).
        A backend without per-run accounting keeps this default."""

    def end_run(self) -> RunUsage | None:
        """The usage since ``begin_run``, or None where this sandbox cannot tell. Called by
        Session when the run ends (Finished, a forced end after an exec timeout, or the
        sandbox's death); same cost rules as ``begin_run``. Raises OSError."""
        return None

    def work_dir(self) -> WorkDir | None:
        """The session's /home/work as the host sees it, for file transfers done by
        the agent (bai.agent.files), or None where the host cannot reach it. Called by
        Agent.upload_file, download and list_files; a backend without host access keeps
        this default."""
        return None

    @abstractmethod
    async def wait_exit(self) -> int:
        """Wait until the sandbox's first process has exited and return its status.
        Called by the agent to tell why a runner disappeared."""

    @abstractmethod
    def diagnostics(self) -> str:
        """The last lines the sandbox wrote outside the protocol (bwrap errors, a
        runner's crash); for SessionCreationFailed and SessionGone reasons."""

    @abstractmethod
    async def stats(self) -> SessionStats:
        """Live usage. Called by Agent.session_stats."""

    @abstractmethod
    async def restart(self) -> None:
        """Kill every process of the sandbox and start a fresh one on the same scratch
        dir, with a new runner socket. Called by Agent.restart_session, after the agent
        stopped listening to the old socket. Raises SessionRestartFailed."""

    def query_message(self, run_id: str, code: str) -> protocol.Execute:
        """The Execute frame of a query: the code alone, for an engine that runs it
        itself; a backend whose runner compiles and runs files renders the commands."""
        return protocol.Execute(run_id=run_id, code=code)

    def batch_message(self, run_id: str, batch: BatchSteps) -> protocol.Execute:
        """The Execute frame of a batch run (its steps rendered). Raises InvalidRequest
        naming the option that cannot be run."""
        raise InvalidRequest(f"the {type(self).__name__} has no batch mode", field="mode")

    async def claim(self, spec: SandboxSpec, limits: Limits) -> None:
        """Make this pooled sandbox (started for no session) the sandbox of ``spec``:
        set ``limits`` on its running processes and take the session's id. Called by
        WarmPool.claim (bai.agent.pool) before the environment is sent to the runner.
        Raises SessionCreationFailed when the limits cannot be applied (the caller
        destroys the sandbox and starts the session cold). A backend without a pool
        keeps this default."""
        raise SessionCreationFailed(f"the {type(self).__name__} cannot be claimed from a pool")

    @abstractmethod
    async def destroy(self, grace_s: float) -> SessionStats:
        """Give the processes ``grace_s`` to exit (the agent has sent Shutdown), kill
        what is left, measure the final usage, then release everything (cgroup,
        scratch dir, uid). Called by Agent.destroy_session and Agent.stop; idempotent."""


class MeteredSandbox(Sandbox):
    """A sandbox accounted through a cgroup driver: the OOM notification fd and the per-run
    meter it keeps open (both backends' sandboxes). Each sets ``_oom_fd`` and ``_meter``
    when its cgroup is known and closes them itself."""

    _oom_fd: int | None = None
    _meter: RunMeter | None = None

    @property
    @abstractmethod
    def cgroup_driver(self) -> CgroupDriver | None:
        """The host's driver, or None where the agent has no cgroups."""

    def oom_watch_fd(self) -> int | None:
        return self._oom_fd

    def drain_oom_watch(self) -> bool:
        driver = self.cgroup_driver
        if self._oom_fd is None or driver is None:
            return False
        return driver.drain_oom_watch(self._oom_fd)

    def begin_run(self) -> None:
        if self._meter is not None:
            self._meter.start()

    def end_run(self) -> RunUsage | None:
        return self._meter.stop() if self._meter is not None else None


class Backend(ABC):
    """Makes sandboxes on one node. Chosen by ``AgentConfig.backend`` through BACKENDS."""

    name: ClassVar[str]

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    @abstractmethod
    async def start(self) -> None:
        """Check the host (tools, permissions), prepare directories and clean what a
        previous agent with the same id left behind. Called by Agent.start."""

    @abstractmethod
    async def stop(self) -> None:
        """Release node-wide resources, after every sandbox was destroyed. Called by Agent.stop."""

    @abstractmethod
    def capacity(self) -> dict[str, Decimal]:
        """Slots this node offers (cpu cores, mem bytes...). Called by Agent.info."""

    @abstractmethod
    def environments(self) -> list[str]:
        """Names of the environments it can start. Called by Agent.info and create_session."""

    def unavailable_environments(self) -> dict[str, str]:
        """The environments it knows but cannot start (``environments``' keys), each with
        why not and how to make it startable. Called by Agent.info: the manager lists them
        (``GET /environments``) and names the reason when a session asks for one."""
        return {}

    def environment_problem(self, environment: str) -> str | None:
        """Why ``environment`` cannot be started here, or None when it can. Called by
        Agent.create_session."""
        if environment in self.environments():
            return None
        return f"unknown environment {environment!r} (this agent has: {', '.join(self.environments())})"

    def pooled_environments(self) -> list[str]:
        """The environments the warm pool keeps sandboxes of. Called by Agent.start."""
        return self.environments()

    def scratch_type(self) -> str | None:
        """What backs each session's /home/work ("hostfile", "memory", "hostdir"), once
        started; None where the backend does not say. Called by Agent.info."""
        return None

    def poolable(self, spec: SandboxSpec) -> bool:
        """Whether a pooled sandbox (started with the agent's defaults) can become
        ``spec``'s: what ``claim`` cannot change, such as the scratch disk's size, is
        what ``spec`` asks for. Called by Agent.create_session before claiming one."""
        return True

    #: whether ``recover`` and ``detach`` work: sandboxes outlive the agent process
    reattachable: ClassVar[bool] = False

    async def recover(self) -> list[tuple[SandboxSpec, Sandbox]]:
        """The sandboxes a previous agent on this data dir left running, taken back, each
        with its session's spec; their runners are connected but not Ready yet. Called by
        Agent.start once, after ``start``. A backend whose sandboxes die with the agent
        keeps this default."""
        return []

    def detach(self, sandbox: Sandbox) -> None:
        """Let go of ``sandbox`` and leave it running for the next agent's ``recover``
        (Agent.stop with ``keep_sessions``); only where ``reattachable``."""
        raise NotImplementedError(f"the {self.name} backend cannot leave sandboxes running")

    @abstractmethod
    async def create(self, spec: SandboxSpec, limits: Limits) -> Sandbox:
        """Start a sandbox whose runner is connected to ``runner_socket`` (it may not
        be Ready yet: the agent waits for that). Called by Agent.create_session, which
        has validated ``spec``. Raises SessionCreationFailed and leaves nothing behind."""
