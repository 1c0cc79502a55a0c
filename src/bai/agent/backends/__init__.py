"""Sandbox backends, chosen by name (``AgentConfig.backend``)."""

from __future__ import annotations

from bai.agent.backends.base import Backend, Sandbox
from bai.agent.backends.docker.backend import DockerBackend
from bai.agent.backends.local.backend import LocalBackend
from bai.agent.config import AgentConfig

BACKENDS: dict[str, type[Backend]] = {
    LocalBackend.name: LocalBackend,
    DockerBackend.name: DockerBackend,
}


def create_backend(config: AgentConfig) -> Backend:
    """The backend named by ``config.backend``. Raises KeyError naming the known ones."""
    try:
        cls = BACKENDS[config.backend]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise KeyError(f"unknown backend {config.backend!r}; known: {known}") from None
    return cls(config)


__all__ = ["BACKENDS", "Backend", "Sandbox", "create_backend"]
