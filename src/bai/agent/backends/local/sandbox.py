"""One local sandbox: bwrap started with the session's cgroups, uid and fds.

Start (all on the event loop, the fork in the spawn helper process; no sleeps):

1. the backend has made the session's scratch dir (owned by the session's
   host uid) and cgroup(s); the sandbox opens the cgroups' join files and a
   socketpair;
2. the spawn helper (bai.agent.backends.local.spawner) forks bwrap; the child, before exec, joins the
   cgroups (``b"0"`` into each join file), drops to the session's host uid, and
   puts the runner's socket on fd 3 and bwrap's info and data pipes on fds 4..
   (bai.agent.backends.local.bwrap: the environment's seccomp program, and the synthetic
   /etc files where no /etc view holds them), leaving every other fd close-on-exec;
3. bwrap builds the namespaces and execs the runner as the sandbox's PID 1;
4. after the runner's Ready, the runner (and bwrap's monitor) get
   ``oom_score_adj = -1000``, so the OOM killer takes the user's processes.

Destruction kills everything in the cgroup, reaps bwrap, reads the final
figures, and only then removes the cgroup and the scratch disk (bai.agent.scratch:
an unmount and the image's unlink, or an fd-based rmtree for a plain dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bai.agent import cgroups
from bai.agent.backends.base import MeteredSandbox
from bai.agent.backends.host import protect_from_oom, scratch_usage, usage_of
from bai.agent.backends.local import bwrap
from bai.agent.backends.local.spawner import Spawner, WatchedChild
from bai.agent.cgroups import CgroupDriver, CgroupError, Limits, RunMeter, SessionCgroup
from bai.agent.config import AgentConfig
from bai.agent.environments.launch import Launch
from bai.agent.files import WorkDir
from bai.agent.gpu import GpuAllocator, GpuDevice, GpuInventory, visible_devices
from bai.agent.scratch import Scratch, ScratchDisks
from bai.common.agent_rpc import BatchSteps, SandboxSpec, SessionStats
from bai.common.errors import SessionCreationFailed, SessionRestartFailed
from bai.runner import protocol

log = logging.getLogger(__name__)

KILL_DEADLINE_S = 5.0


@dataclass
class LocalHost:
    """What every local sandbox shares: set up once by LocalBackend.start."""

    config: AgentConfig
    cgroups: CgroupDriver | None
    layout: list[str]  # bwrap.host_layout()
    etc_data: bool  # the synthetic /etc files go on fds (no /etc view in the layout holds them)
    seccomp: dict[str, bytes]  # environment name → BPF program, compiled once at start; absent: no filter
    launches: dict[str, Launch]  # "name" (its default tag) and "name:tag" → what the runner is told
    runner_dir: Path
    spawner: Spawner
    scratch: ScratchDisks
    gpus: GpuInventory  # the host's GPUs (none, real, or a fake inventory)
    gpu_allocator: GpuAllocator  # which session holds which of them
    released: Callable[[LocalSandbox], None]  # called once a sandbox has let go of everything
    renamed: Callable[[LocalSandbox, str], None]  # (sandbox, old session id): a pooled one was claimed


async def kill_cgroup(driver: CgroupDriver, cgroup: SessionCgroup, what: str) -> None:
    """SIGKILL rounds until the cgroup is empty (or KILL_DEADLINE_S passed)."""
    deadline = time.monotonic() + KILL_DEADLINE_S
    while not driver.kill_round(cgroup):
        if time.monotonic() > deadline:
            log.warning("%s: processes survive SIGKILL", what)
            return
        await asyncio.sleep(0.001)


class LocalSandbox(MeteredSandbox):
    def __init__(
        self,
        host: LocalHost,
        spec: SandboxSpec,
        limits: Limits,
        uid: int | None,
        scratch: Scratch,
        gpus: Sequence[GpuDevice] = (),
    ) -> None:
        self.host = host
        self.gpus = tuple(gpus)  # its devices, allocated by the backend for as long as it lives
        self.name = spec.session_id  # of the cgroup and scratch dir; a pooled one keeps it when claimed
        self.session_id = spec.session_id
        self.spec = spec
        self.limits = limits
        self.uid = uid
        self.scratch_disk = scratch
        self.scratch = scratch.path  # bound at /home/work; kept across restarts
        self.cgroup: SessionCgroup | None = None
        self.child: WatchedChild | None = None  # bwrap (its monitor process)
        self.child_pid: int | None = None  # the sandbox's PID 1, the runner
        self._child_pidfd: int | None = None  # pins child_pid against reuse
        self._socket: socket.socket | None = None
        self._info_task: asyncio.Task[None] | None = None
        self._oom_fd: int | None = None
        self._meter: RunMeter | None = None  # per-run accounting; None without cgroups
        self._final: SessionStats | None = None

    # -- start ---------------------------------------------------------------

    async def start(self) -> None:
        driver = self.host.cgroups
        if driver is not None:
            self.cgroup = driver.create(self.name, self.limits)
            self._oom_fd = driver.oom_watch(self.cgroup)
            try:
                self._meter = driver.open_meter(self.cgroup)
            except OSError as exc:
                log.warning("session %s: no per-run accounting: %s", self.session_id, exc)
        await self._spawn()

    @property
    def launch(self) -> Launch:
        try:
            return self.host.launches[self.spec.environment]
        except KeyError:
            raise SessionCreationFailed(f"environment {self.spec.environment!r} is not available here") from None

    def _command(self) -> list[str]:
        config = self.host.config
        launch = self.launch
        return bwrap.SandboxCommand(
            bwrap=config.bwrap_path,
            layout=self.host.layout,
            scratch=self.scratch,
            runner_dir=self.host.runner_dir,
            runner_python=launch.runner_python(config.runner_python),
            engine=launch.engine,
            environ=self._environ(),
            preload=config.preload_modules if launch.engine == "python" else (),
            devices=tuple(str(node) for node in self.host.gpus.nodes_for(self.gpus)),
            tmp_size=config.tmp_size,
            seccomp=launch.env.name in self.host.seccomp,
            config=json.dumps(launch.runner_config(), separators=(",", ":")) if launch.engine != "python" else "",
            binds=launch.binds,
            etc_data=self.host.etc_data,
        ).argv()

    def _environ(self) -> dict[str, str]:
        if not self.gpus:
            return dict(self.spec.environ)
        return {**self.spec.environ, "CUDA_VISIBLE_DEVICES": visible_devices(self.gpus)}

    def query_message(self, run_id: str, code: str) -> protocol.Execute:
        source, steps = self.launch.query(code)
        return protocol.Execute(run_id=run_id, code=code, source=source, steps=steps)

    def batch_message(self, run_id: str, batch: BatchSteps) -> protocol.Execute:
        options = {"clean": batch.clean, "build": batch.build, "exec": batch.exec}
        steps = self.launch.batch(options, self.scratch)
        return protocol.Execute(run_id=run_id, code="", mode="batch", steps=steps, build_log=batch.build_log)

    async def _spawn(self) -> None:
        agent_end, runner_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        info_r, info_w = os.pipe()
        data = list(bwrap.etc_files().values()) if self.host.etc_data else []
        program = self.host.seccomp.get(self.launch.env.name)
        if program is not None:
            data.append(program)  # in bwrap.SandboxCommand.data_fds' order
        data_fds = [_data_pipe(chunk) for chunk in data]
        child_fds = [runner_end.fileno(), info_w, *data_fds]
        procs_fds = self.cgroup.open_procs() if self.cgroup is not None else []
        try:
            self.child = await self.host.spawner.spawn(
                self._command(), env={"PATH": bwrap.PATH}, uid=self.uid, fds=child_fds, join=procs_fds
            )
        except OSError as exc:
            agent_end.close()
            os.close(info_r)
            raise SessionCreationFailed(f"cannot start the sandbox: {exc}") from exc
        finally:
            runner_end.close()
            for fd in (info_w, *data_fds):
                os.close(fd)
            if self.cgroup is not None:
                self.cgroup.close_procs()
        self._socket = agent_end
        self.child_pid = None
        self._info_task = asyncio.create_task(self._read_info(info_r))

    async def _read_info(self, fd: int) -> None:
        """Read bwrap's --info-fd JSON: the host pid of the sandbox's PID 1."""
        loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        data = bytearray()
        done = loop.create_future()

        def readable() -> None:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                return
            data.extend(chunk)
            if (not chunk or _parse_info(data) is not None) and not done.done():
                done.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await done
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        self.child_pid = _parse_info(data)
        if self.child_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                self._child_pidfd = os.pidfd_open(self.child_pid)

    # -- Sandbox interface ---------------------------------------------------

    @property
    def runner_socket(self) -> socket.socket:
        assert self._socket is not None, "sandbox not started"
        return self._socket

    def runner_started(self) -> None:
        protect_from_oom([self.child_pid, self.child.pid if self.child else None])

    @property
    def cgroup_driver(self) -> CgroupDriver | None:
        return self.host.cgroups

    def oom_kills(self) -> int:
        if self.cgroup is None or self.host.cgroups is None:
            return 0
        return self.host.cgroups.oom_kills(self.cgroup)


    def work_dir(self) -> WorkDir:
        return WorkDir(self.scratch, self.uid)

    async def wait_exit(self) -> int:
        assert self.child is not None
        status = await self.child.wait()
        await self.child.wait_stderr(0.5)  # bwrap's last words
        return status

    def diagnostics(self) -> str:
        if self.child is None:
            return ""
        return self.child.stderr_tail.decode("utf-8", "replace").strip()

    async def stats(self) -> SessionStats:
        if self._final is not None:
            return self._final
        return await self._measure()

    async def _measure(self) -> SessionStats:
        figures = cgroups.CgroupStats()
        driver = self.host.cgroups
        if driver is not None and self.cgroup is not None:
            figures = driver.stats(self.cgroup)
        # on v1 each run's start resets the kernel's peak: the meter kept the session's
        session_peak = self._meter.session_peak if self._meter is not None else 0
        scratch = await scratch_usage(self.host.scratch, self.scratch_disk)
        return usage_of(figures, self.limits, session_peak, scratch, 0)

    async def claim(self, spec: SandboxSpec, limits: Limits) -> None:
        wanted = self.host.scratch.cap_for(spec.scratch_bytes)
        if wanted != self.scratch_disk.cap:
            have = self.scratch_disk.cap
            raise SessionCreationFailed(
                f"the pooled sandbox's scratch disk holds {have} bytes, the session asks {wanted}"
            )
        driver = self.host.cgroups
        if driver is not None and self.cgroup is not None:
            try:
                in_use = driver.memory_current(self.cgroup)
                if in_use >= limits.mem:
                    raise SessionCreationFailed(f"the pooled sandbox already uses {in_use} bytes, over {limits.mem}")
                if limits != self.cgroup.limits:  # the pool's (as applied at its start) are often the session's
                    driver.apply_limits(self.cgroup, limits)
                driver.reset_peak(self.cgroup)
                if self._meter is not None:
                    self._meter.session_peak = 0
            except (OSError, CgroupError) as exc:
                raise SessionCreationFailed(f"cannot set the session's limits: {exc}") from exc
        old_id, self.session_id = self.session_id, spec.session_id
        self.host.renamed(self, old_id)
        self.spec = spec  # a restart starts bwrap with the session's own environment
        self.limits = limits

    async def restart(self) -> None:
        try:
            await self._kill_all()
            if self._socket is not None:
                self._socket.close()
            await self._spawn()
        except (OSError, CgroupError, SessionCreationFailed) as exc:
            raise SessionRestartFailed(f"cannot restart the sandbox: {exc}") from exc

    async def destroy(self, grace_s: float) -> SessionStats:
        if self._final is not None:
            return self._final
        if self.child is not None and self.child.returncode is None and grace_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await self.child.wait()
        await self._kill_all()
        try:
            self._final = await self._measure()
        finally:  # a failed measurement must not leave the cgroup, uid and scratch disk behind
            await self._release()
        return self._final

    # -- teardown ------------------------------------------------------------

    async def _kill_all(self) -> None:
        """SIGKILL every process of the sandbox and reap bwrap."""
        if self._child_pidfd is not None:
            # the namespace's PID 1: its death takes every process of the namespace along
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._child_pidfd, signal.SIGKILL)
            os.close(self._child_pidfd)
            self._child_pidfd = None
        driver = self.host.cgroups
        if driver is not None and self.cgroup is not None:
            await kill_cgroup(driver, self.cgroup, f"session {self.session_id}")
        if self.child is not None:
            self.child.kill()
            await self.child.wait()
            self.child.release()
        if self._info_task is not None:
            self._info_task.cancel()
            await asyncio.gather(self._info_task, return_exceptions=True)

    async def _release(self) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._oom_fd is not None:
            os.close(self._oom_fd)
            self._oom_fd = None
        if self._meter is not None:
            self._meter.close()
            self._meter = None
        driver = self.host.cgroups
        if driver is not None and self.cgroup is not None:
            try:
                driver.remove(self.cgroup)
            except CgroupError as exc:
                log.warning("session %s: %s", self.session_id, exc)
        try:
            await asyncio.to_thread(self.host.scratch.remove, self.scratch_disk)
        except OSError as exc:  # the next agent start reconciles what is left
            log.warning("session %s: cannot remove the scratch disk: %s", self.session_id, exc)
        self.host.released(self)


def _data_pipe(data: bytes) -> int:
    """A pipe's read end holding ``data`` (small enough for the pipe buffer: the seccomp
    program is capped at bai.agent.seccomp.bpf.MAX_PROGRAM_BYTES)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


def _parse_info(data: bytes | bytearray) -> int | None:
    try:
        info = json.loads(bytes(data))
    except ValueError:
        return None
    pid = info.get("child-pid") if isinstance(info, dict) else None
    return pid if isinstance(pid, int) else None
