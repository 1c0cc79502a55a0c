"""The docker tiers' probe (tests/docker_sandbox.py) on machines without an engine: every
way the engine can be missing is a reason to skip with, never an exception at collection
(aiodocker asserts when there is no address at all)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import aiodocker.docker
import pytest
from docker_sandbox import engine_unavailable


@pytest.fixture
def no_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No DOCKER_HOST, no Docker context, a home without ~/.docker, and default socket
    paths that do not exist: what a fresh machine without Docker looks like to aiodocker."""
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(aiodocker.docker, "_sock_search_paths", [tmp_path / "run" / "docker.sock"])
    return tmp_path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    try:
        yield server, path
    finally:
        server.close()


async def test_no_address_at_all_is_a_reason(no_docker_config: Path) -> None:
    with pytest.raises(AssertionError):
        aiodocker.Docker()  # what the probe used to let through, stopping the collection
    reason = await engine_unavailable()
    assert reason is not None and reason.startswith("no Docker engine"), reason


async def test_docker_host_at_a_missing_socket_is_a_reason(
    no_docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = no_docker_config / "nowhere" / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{missing}")
    reason = await engine_unavailable()
    assert reason is not None and "no Docker engine answers" in reason and str(missing) in reason, reason


async def test_a_docker_host_without_a_scheme_is_a_reason(
    no_docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "/var/run/docker.sock")
    reason = await engine_unavailable()
    assert reason is not None and "scheme" in reason, reason


async def test_a_socket_nobody_listens_on_is_a_reason(
    no_docker_config: Path, monkeypatch: pytest.MonkeyPatch, unix_socket: tuple[socket.socket, Path]
) -> None:
    _, path = unix_socket  # bound, never listening: a stale socket of an engine that died
    monkeypatch.setattr(aiodocker.docker, "_sock_search_paths", [path])
    reason = await engine_unavailable()
    assert reason is not None and "no Docker engine answers" in reason, reason


async def test_an_engine_that_never_answers_is_a_reason(
    no_docker_config: Path, monkeypatch: pytest.MonkeyPatch, unix_socket: tuple[socket.socket, Path]
) -> None:
    server, path = unix_socket
    server.listen()  # the connection is queued; nothing ever reads the request
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    reason = await engine_unavailable(timeout_s=0.2)
    assert reason is not None and "did not answer in 0.2 s" in reason, reason
