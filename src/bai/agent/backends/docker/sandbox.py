"""One session's container (bai.agent.backends.docker.backend): created and started by
``DockerBackend.create``, its runner reached through a unix socket the agent listens on.

The agent binds ``runner.sock`` in a per-sandbox host dir (mode 0755 under a 0711 root,
its name a random token) that the container sees at /run/bai; the runner, started as the
container's command under Docker's init, connects to it (``--connect``). The agent
accepts one connection per start: the runner's, told by its peer credentials.

Accounting reads cgroup files with bai.agent.cgroups' drivers: no Engine API call on
the execute path. Where Docker's cgroup driver is cgroupfs, the agent makes a session
cgroup (``bai/<agent id>/<name>``, the local backend's layout) and starts the container
under it (``CgroupParent``): its figures are hierarchical and outlive the container's
cgroup, which Docker removes as soon as the container's last process exits (a runner
that dies mid-run, a restart, the Shutdown before destroy). Elsewhere (the systemd
driver) the figures come from the container's own cgroup, found from the runner's
/proc/PID/cgroup. The OOM watch is always on the container's own cgroup, where the
limit is hit; Docker makes a fresh one at each start, so it is reopened after each.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.containers import DockerContainer

from bai.agent import cgroups
from bai.agent.backends.base import MeteredSandbox
from bai.agent.backends.docker.container import (
    SOCKET_NAME,
    ContainerSpec,
    cgroup_path,
    container_name,
    limit_fields,
    parent_pid,
)
from bai.agent.backends.docker.record import SandboxRecord, scratch_fields
from bai.agent.backends.host import protect_from_oom, scratch_usage, usage_of
from bai.agent.cgroups import CgroupDriver, CgroupError, Limits, RunMeter, SessionCgroup
from bai.agent.config import AgentConfig
from bai.agent.environments.launch import Launch
from bai.agent.files import WorkDir
from bai.agent.scratch import Scratch, ScratchDisks
from bai.common.agent_rpc import BatchSteps, SandboxSpec, SessionStats
from bai.common.errors import SessionCreationFailed, SessionRestartFailed
from bai.runner import protocol

log = logging.getLogger(__name__)

LOG_TAIL = 20  # lines of the container's output kept for diagnostics
ACCEPT_POLL_S = 0.25  # how often a start that has not connected yet checks the container


@dataclass
class DockerHost:
    """What every container sandbox shares: set up once by DockerBackend.start."""

    config: AgentConfig
    docker: aiodocker.Docker
    cgroups: CgroupDriver | None
    scratch: ScratchDisks
    released: Callable[[DockerSandbox], None]
    renamed: Callable[[DockerSandbox, str], None]
    records: Path  # each session's SandboxRecord (record.py), for a restarted agent


class DockerSandbox(MeteredSandbox):
    def __init__(
        self,
        host: DockerHost,
        spec: SandboxSpec,
        container: ContainerSpec,
        scratch: Scratch,
        parent: SessionCgroup | None = None,
        launch: Launch | None = None,
        gpus: tuple[int, ...] = (),
    ) -> None:
        self.host = host
        self.launch = launch  # its catalog entry: how a query's file is compiled, batch's steps
        self.session_id = spec.session_id
        self.spec = spec
        self.container_spec = container
        self.limits = container.limits
        self.scratch_disk = scratch
        self.socket_dir = container.socket_dir
        self.gpus = gpus  # the indexes of its devices (bai.agent.gpu)
        self.container: DockerContainer | None = None
        self.container_id = ""
        self.runner_pid: int | None = None
        self.cgroup: SessionCgroup | None = None  # the container's own, for this start
        self.parent = parent  # the session cgroup above it (cgroupfs), or None
        self._oom_base = 0  # OOM kills in the containers' cgroups of the earlier starts
        self._oom_total = 0
        self._listener: socket.socket | None = None
        self._socket: socket.socket | None = None
        self._oom_fd: int | None = None
        self._meter: RunMeter | None = None
        self._logs = ""
        self._final: SessionStats | None = None
        self._exit_status: int | None = None

    @property
    def name(self) -> str:
        """The name it was created under (its scratch dir's, its session cgroup's, its
        ``bai.session`` label's): a pooled one keeps its pool name once claimed, as a
        local sandbox does."""
        return self.container_spec.session_id

    def query_message(self, run_id: str, code: str) -> protocol.Execute:
        if self.launch is None:
            return super().query_message(run_id, code)
        source, steps = self.launch.query(code)
        return protocol.Execute(run_id=run_id, code=code, source=source, steps=steps)

    def batch_message(self, run_id: str, batch: BatchSteps) -> protocol.Execute:
        if self.launch is None:
            return super().batch_message(run_id, batch)
        options = {"clean": batch.clean, "build": batch.build, "exec": batch.exec}
        steps = self.launch.batch(options, self.scratch_disk.path)
        return protocol.Execute(run_id=run_id, code="", mode="batch", steps=steps, build_log=batch.build_log)

    # -- start ---------------------------------------------------------------

    async def start(self) -> None:
        """Create and start the container, then accept its runner's connection."""
        self._listen()
        self._open_meter(self.parent)
        body = self.container_spec.body()
        name = container_name(self.host.config.agent_id, self.session_id)
        try:
            self.container = await self.host.docker.containers.create(body, name=name)
        except aiodocker.DockerError as exc:
            raise SessionCreationFailed(f"cannot create the container: {exc.message}") from exc
        self.container_id = self.container.id
        await self._start_and_accept()

    async def reattach(self, container: DockerContainer, runner_pid: int | None) -> None:
        """Take back the running ``container`` of a previous agent (its record gave this
        sandbox's parts): listen again on its socket dir, which its runner retries until
        it connects (``--reconnect``), and reopen the accounting. Raises
        SessionCreationFailed when the runner does not come back."""
        self.container, self.container_id = container, container.id
        self._listen(fresh=False)
        self._open_meter(self.parent)
        self._socket = await self._accept(runner=runner_pid)
        self._attach_cgroup()

    def detach(self) -> None:
        """Let go of the container, leaving it running with everything it uses (the agent
        stops with ``keep_sessions``): its runner waits for the next agent."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._close_oom_watch()
        self._close_meter()

    def _listen(self, fresh: bool = True) -> None:
        path = self.socket_dir / SOCKET_NAME
        if fresh:
            self.socket_dir.mkdir(mode=0o755)
            self.socket_dir.chmod(0o755)
        else:  # the runner's bind mount holds this dir: a new socket in it, the old one's name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(str(path))
        path.chmod(0o666)  # the container's user connects; the dir's random name hides it
        listener.listen(4)
        listener.setblocking(False)
        self._listener = listener

    # -- the record a restarted agent reads -------------------------------------

    def record(self) -> SandboxRecord:
        return SandboxRecord(
            spec=self.spec,
            container_id=self.container_id,
            created_as=self.container_spec.session_id,
            environment=self.container_spec.image.environment,
            cpu=str(self.limits.cpu),
            mem=self.limits.mem,
            pids=self.limits.pids,
            socket_dir=str(self.socket_dir),
            scratch=scratch_fields(self.scratch_disk),
            parent_cgroup=self.parent is not None,
            gpus=self.gpus,
            uid=self.container_spec.uid,
            runner_pid=self.runner_pid,
        )

    def _save_record(self) -> None:
        """Written in place of any older one (tmp + rename): a crash leaves one whole."""
        path = self.host.records / f"{self.session_id}.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(self.record().to_json())
            os.replace(tmp, path)
        except OSError as exc:  # the session works; only a re-attach after a crash is lost
            log.warning("session %s: cannot save its record: %s", self.session_id, exc)

    def _drop_record(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.host.records / f"{self.session_id}.json").unlink()

    async def _start_and_accept(self) -> None:
        assert self.container is not None
        self._exit_status = None
        try:
            await self.container.start()
        except aiodocker.DockerError as exc:
            raise SessionCreationFailed(f"cannot start the container: {exc.message}") from exc
        self._socket = await self._accept()
        self._attach_cgroup()
        if not _pooled(self.session_id):
            self._save_record()  # its container id and runner pid are this start's

    async def _accept(self, runner: int | None = None) -> socket.socket:
        """The runner's connection; fails once the container has stopped or the start
        timeout passed. Connections from processes outside the container are refused (where
        the peer's pid is visible: the engine in the agent's pid namespace); with ``runner``
        (a re-attach, when the user's code runs already and could connect first), any
        process but that one is refused."""
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.host.config.startup_timeout_s
        while time.monotonic() < deadline:
            try:
                conn, _ = await asyncio.wait_for(loop.sock_accept(self._listener), ACCEPT_POLL_S)
            except TimeoutError:
                if not await self._running():
                    await self._fetch_logs()
                    raise SessionCreationFailed(
                        f"the container exited before its runner connected{self._suffix()}"
                    ) from None
                continue
            pid = _peer_pid(conn)
            if pid is None:  # the engine runs in a pid namespace the agent cannot see into
                log.info("session %s: the runner's pid is not visible here: no container cgroup", self.session_id)
                return conn
            if self._is_ours(pid) and runner in (None, pid):
                self.runner_pid = pid
                return conn
            log.warning("session %s: refused a connection from pid %s", self.session_id, pid)
            conn.close()
        await self._fetch_logs()
        raise SessionCreationFailed(f"the runner did not connect within the start timeout{self._suffix()}")

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` runs in this container (its cgroup names the container's id)."""
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return False
        return self.container_id in text

    async def _running(self) -> bool:
        assert self.container is not None
        try:
            info = await self.container.show()
        except aiodocker.DockerError:
            return False
        state = info.get("State", {})
        if not state.get("Running", False):
            self._exit_status = int(state.get("ExitCode", -1))
            return False
        return True

    def _open_meter(self, cgroup: SessionCgroup | None) -> None:
        driver = self.host.cgroups
        if driver is None or cgroup is None:
            return
        try:
            self._meter = driver.open_meter(cgroup)
        except OSError as exc:
            log.warning("session %s: no per-run accounting: %s", self.session_id, exc)

    @property
    def accounted(self) -> SessionCgroup | None:
        """The cgroup whose figures are the session's: the session cgroup, else the container's."""
        return self.parent if self.parent is not None else self.cgroup

    def _attach_cgroup(self) -> None:
        """The container's cgroup (Docker made a fresh one for this start), its OOM watch
        and, without a session cgroup, its per-run meter."""
        self._close_oom_watch()
        if self.parent is None:
            self._close_meter()
        self.oom_kills()
        self._oom_base, self.cgroup = self._oom_total, None
        driver = self.host.cgroups
        if driver is None or self.runner_pid is None:
            return
        try:
            text = Path(f"/proc/{self.runner_pid}/cgroup").read_text()
        except OSError as exc:
            log.warning("session %s: no accounting: %s", self.session_id, exc)
            return
        name = cgroup_path(text, driver.version)
        if name is None:
            log.warning("session %s: no %s cgroup in /proc/%s/cgroup", self.session_id, driver.version, self.runner_pid)
            return
        self.cgroup = SessionCgroup(name=name, dirs=[root / name for root in driver.roots()], limits=self.limits)
        self._oom_fd = driver.oom_watch(self.cgroup)
        if self.parent is None:
            self._open_meter(self.cgroup)

    def _close_oom_watch(self) -> None:
        if self._oom_fd is not None:
            os.close(self._oom_fd)
            self._oom_fd = None

    def _close_meter(self) -> None:
        if self._meter is not None:
            self._meter.close()
            self._meter = None

    # -- Sandbox interface ---------------------------------------------------

    @property
    def runner_socket(self) -> socket.socket:
        assert self._socket is not None, "sandbox not started"
        return self._socket

    def runner_started(self) -> None:
        """Protect the runner (and Docker's init above it, if any) from the OOM killer."""
        if self.runner_pid is None:
            return
        pids = [self.runner_pid]
        if self.container_spec.init:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids.append(parent_pid(Path(f"/proc/{self.runner_pid}/stat").read_text()))
        protect_from_oom(pids)

    @property
    def cgroup_driver(self) -> CgroupDriver | None:
        return self.host.cgroups

    def oom_kills(self) -> int:
        """The kills counted by the container's cgroups, this start's and the earlier ones'
        (on v1 a parent cgroup does not count its children's)."""
        if self.cgroup is not None and self.host.cgroups is not None:
            with contextlib.suppress(OSError):  # gone with the container: the last count stands
                now = self._oom_base + self.host.cgroups.oom_kills(self.cgroup)
                self._oom_total = max(self._oom_total, now)
        return self._oom_total


    def work_dir(self) -> WorkDir:
        """The scratch dir bound at the image's work dir: the agent made every part of its
        host path; files it creates there go to the container's user (its own host uid, else
        the image's; uid = gid, container.passwd_files)."""
        uid = self.container_spec.uid
        return WorkDir(self.scratch_disk.path, uid if uid is not None else self.container_spec.image.uid)

    async def wait_exit(self) -> int:
        if self.container is None:
            return -1
        try:
            result = await self.container.wait()
            status = int(result.get("StatusCode", -1))
        except aiodocker.DockerError:
            status = self._exit_status if self._exit_status is not None else -1
        await self._fetch_logs()
        return status

    def diagnostics(self) -> str:
        return self._logs

    def _suffix(self) -> str:
        return f": {self._logs}" if self._logs else ""

    async def _fetch_logs(self) -> None:
        """The last lines the container wrote (the runner's stderr, Docker's init)."""
        if self.container is None:
            return
        try:
            lines: Any = await self.container.log(stdout=True, stderr=True, tail=LOG_TAIL)
        except aiodocker.DockerError as exc:
            log.debug("session %s: no container logs: %s", self.session_id, exc)
            return
        self._logs = "".join(lines).strip()

    async def stats(self) -> SessionStats:
        if self._final is not None:
            return self._final
        return await self._measure()

    async def _measure(self) -> SessionStats:
        figures = cgroups.CgroupStats()
        driver, cgroup = self.host.cgroups, self.accounted
        if driver is not None and cgroup is not None and cgroup.dirs[0].is_dir():
            with contextlib.suppress(OSError):
                figures = driver.stats(cgroup)
        session_peak = self._meter.session_peak if self._meter is not None else 0
        scratch = await scratch_usage(self.host.scratch, self.scratch_disk)
        return usage_of(figures, self.limits, session_peak, scratch, self.oom_kills())

    async def claim(self, spec: SandboxSpec, limits: Limits) -> None:
        """Docker's update sets the session's limits on the running container (skipped when
        they are the pool's already: ~9 ms of the engine's), and a rename gives it the
        session's name (its bai.session label keeps the pool name)."""
        wanted = self.host.scratch.cap_for(spec.scratch_bytes)
        if wanted != self.scratch_disk.cap:
            raise SessionCreationFailed(
                f"the pooled sandbox's scratch disk holds {self.scratch_disk.cap} bytes, the session asks {wanted}"
            )
        self._check_memory(limits)
        name = container_name(self.host.config.agent_id, spec.session_id)
        try:
            if limits != self.limits:
                await asyncio.gather(self._rename(name), self._take_limits(limits))
            else:
                await self._rename(name)
        except aiodocker.DockerError as exc:
            raise SessionCreationFailed(f"cannot make the pooled container the session's: {exc.message}") from exc
        self._reset_peak()
        old_id, self.session_id = self.session_id, spec.session_id
        self.host.renamed(self, old_id)
        self.spec = spec
        self.limits = limits
        self._save_record()

    async def _take_limits(self, limits: Limits) -> None:
        """The session's limits on the container (Docker's update) and on its session
        cgroup. Cgroup v1's CPU controller refuses (EINVAL) a quota on a parent under one of
        its children's: a lower quota goes on the container first, a higher one on the
        session cgroup first."""
        if limits.cpu < self.limits.cpu:
            await self._update(limits)
            self._limit_session_cgroup(limits)
        else:
            self._limit_session_cgroup(limits)
            await self._update(limits)

    def _limit_session_cgroup(self, limits: Limits) -> None:
        driver = self.host.cgroups
        if driver is not None and self.parent is not None:
            try:
                driver.apply_limits(self.parent, limits)
            except (OSError, CgroupError) as exc:
                raise SessionCreationFailed(f"cannot set the session's limits: {exc}") from exc

    async def _update(self, limits: Limits) -> None:
        await self.host.docker._query_json(f"containers/{self.container_id}/update", "POST", data=limit_fields(limits))

    async def _rename(self, name: str) -> None:
        async with self.host.docker._query(f"containers/{self.container_id}/rename", "POST", params={"name": name}):
            pass

    def _check_memory(self, limits: Limits) -> None:
        driver, cgroup = self.host.cgroups, self.accounted
        if driver is None or cgroup is None:
            return
        try:
            in_use = driver.stats(cgroup).mem_current
        except OSError as exc:
            raise SessionCreationFailed(f"cannot read the pooled sandbox's usage: {exc}") from exc
        if in_use >= limits.mem:
            raise SessionCreationFailed(f"the pooled sandbox already uses {in_use} bytes, over {limits.mem}")

    def _reset_peak(self) -> None:
        driver, cgroup = self.host.cgroups, self.accounted
        if driver is not None and cgroup is not None:
            with contextlib.suppress(OSError, CgroupError):
                driver.reset_peak(cgroup)
        if self._meter is not None:
            self._meter.session_peak = 0

    async def restart(self) -> None:
        """Kill the container and start it again: same scratch dir, fresh /tmp, new socket.
        A pooled container claimed by a session with variables is made again with them (its
        environment was the pool's; Docker cannot change it), as a restarted local sandbox
        starts with its session's own."""
        try:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            await self._kill()
            if dict(self.spec.environ) != dict(self.container_spec.environ) and self.name != self.session_id:
                await self._recreate()
            await self._start_and_accept()
        except (OSError, SessionCreationFailed) as exc:
            raise SessionRestartFailed(f"cannot restart the container: {exc}") from exc

    async def _recreate(self) -> None:
        """Replace the (stopped) container by one with the session's environment and limits,
        under the same name, cgroup parent, scratch and socket dirs."""
        assert self.container is not None
        with contextlib.suppress(aiodocker.DockerError):  # gone already: made again all the same
            await self.container.delete(force=True, v=True)
        self.container_spec = dataclasses.replace(
            self.container_spec, environ=dict(self.spec.environ), limits=self.limits
        )
        name = container_name(self.host.config.agent_id, self.session_id)
        try:
            self.container = await self.host.docker.containers.create(self.container_spec.body(), name=name)
        except aiodocker.DockerError as exc:
            raise SessionCreationFailed(f"cannot make the container again: {exc.message}") from exc
        self.container_id = self.container.id
        self._save_record()

    async def _kill(self) -> None:
        assert self.container is not None
        with contextlib.suppress(aiodocker.DockerError):  # not running any more
            await self.container.kill(signal="SIGKILL")
        with contextlib.suppress(aiodocker.DockerError):
            await self.container.wait()

    async def destroy(self, grace_s: float) -> SessionStats:
        if self._final is not None:
            return self._final
        # Docker removes the cgroup once the container stops: measure while it lives,
        # then again after the grace in case the runner outlived it
        first = await self._measure()
        if self.container is not None and grace_s > 0:
            with contextlib.suppress(TimeoutError, aiodocker.DockerError):
                async with asyncio.timeout(grace_s):
                    await self.container.wait()
        last = await self._measure()
        self._final = _later(first, last)
        await self._release()
        return self._final

    async def _release(self) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._close_oom_watch()
        self._close_meter()
        if self.container is not None:
            try:
                await self.container.delete(force=True, v=True)
            except aiodocker.DockerError as exc:  # the next agent start removes it
                log.warning("session %s: cannot remove container %s: %s", self.session_id, self.container_id, exc)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        self._drop_record()
        if self.parent is not None and self.host.cgroups is not None:
            try:
                self.host.cgroups.remove(self.parent)
            except CgroupError as exc:  # the next agent start removes it
                log.warning("session %s: %s", self.session_id, exc)
        try:
            await asyncio.to_thread(self.host.scratch.remove, self.scratch_disk)
        except OSError as exc:
            log.warning("session %s: cannot remove the scratch disk: %s", self.session_id, exc)
        self.host.released(self)


def _pooled(session_id: str) -> bool:
    """A pool's sandbox (bai.agent.pool names them "_pool-..."; no session id starts with "_")."""
    return session_id.startswith("_")


def _later(first: SessionStats, last: SessionStats) -> SessionStats:
    """The final figures: the second measurement's, unless the cgroup was gone by then."""
    if last.cpu_used_ms >= first.cpu_used_ms and last.mem_max >= first.mem_max:
        return last
    return first.model_copy(update={"io_scratch_size": last.io_scratch_size, "mem_current": 0})


def _peer_pid(conn: socket.socket) -> int | None:
    """The connecting process's pid in the agent's pid namespace (SO_PEERCRED)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, _, _ = struct.unpack("3i", creds)
    return pid if pid > 0 else None
