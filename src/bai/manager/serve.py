"""Serving the manager: its HTTP server (uvicorn on our event loop) and the
first-start credentials file. Used by ``bai manager`` and by the embedded server."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from bai.manager.api.app import create_app
from bai.manager.core import Manager


@dataclass(frozen=True)
class Credentials:
    endpoint: str
    access_key: str
    secret_key: str
    created: bool  # the keypair was made by this start

    def created_notice(self, env_file: Path) -> str:
        """What a first start prints: where the credentials are, never the secret key
        itself (a server's output is redirected to logs that others read)."""
        return (f"Created an admin keypair (access key {self.access_key}); its credentials are in "
                f"{env_file} (mode 0600): `source {env_file}` to use them.")

    def env_lines(self) -> str:
        return (
            f"export BACKEND_ENDPOINT={self.endpoint}\n"
            f"export BACKEND_ACCESS_KEY={self.access_key}\n"
            f"export BACKEND_SECRET_KEY={self.secret_key}\n"
        )


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, without a moment of wider permissions,
    and without following a link planted at its name."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the command that runs us owns
    SIGINT/SIGTERM, so a stop always goes through our ``stop`` and destroys the
    sandboxes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """The manager's HTTP server. ``stop`` ends the event streams (the bus closes), asks
    every connection to close (uvicorn sends websockets a 1012 close), waits up to
    ``stop_grace_s`` for the requests in flight and then cancels what is left: a client
    that keeps a stream open never holds a stop."""

    def __init__(self, manager: Manager, host: str, port: int, log_level: str = "warning",
                 *, stop_grace_s: int = 2) -> None:
        self.manager = manager
        self.host = host
        self.port = port  # 0: a free port, known after start()
        self.log_level = log_level
        self.stop_grace_s = stop_grace_s
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        config = uvicorn.Config(
            create_app(self.manager), host=self.host, port=self.port, log_level=self.log_level,
            server_header=False, date_header=False, lifespan="off", ws="websockets-sansio",
            timeout_graceful_shutdown=self.stop_grace_s,
        )
        server = _Uvicorn(config)
        self._server = server
        self._task = asyncio.get_running_loop().create_task(server.serve())
        while not server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"the HTTP server could not listen on {self.host}:{self.port}")
            await asyncio.sleep(0.005)
        self.port = next(sock.getsockname()[1] for srv in server.servers for sock in srv.sockets)

    async def stop(self) -> None:
        self.manager.events.close()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def publish_credentials(self, data_dir: Path) -> Credentials:
        """The admin keypair (made on first start) and ``<data_dir>/client.env`` (mode 0600)."""
        keypair, created = await self.manager.ensure_admin_keypair()
        credentials = Credentials(self.endpoint, keypair.access_key, keypair.secret_key, created)
        write_private(data_dir / "client.env", credentials.env_lines())
        return credentials
