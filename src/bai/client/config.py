"""Where the SDK connects and with which keys (API.md section 2, "Client environment variables").

Parsed once, by whoever builds the session (the CLI's root command, or the
caller of ``AsyncSession()`` with no explicit config), and passed in from there.
Every variable is read as ``BACKEND_<KEY>``, falling back to ``SORNA_<KEY>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from bai.client.errors import ConfigError

#: The API version this client speaks and signs with.
CLIENT_API_VERSION = "v8.20240915"

_PREFIXES = ("BACKEND_", "SORNA_")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class APIConfig:
    """Connection settings of one client.

    A timeout of None waits as long as it takes: the default read timeout, since
    a create call returns only once the session runs. ``connection_timeout``
    bounds the TCP/TLS connect.
    """

    endpoint: str
    access_key: str
    secret_key: str
    domain: str = "default"
    group: str = "default"
    connection_timeout: float | None = 10.0
    read_timeout: float | None = None
    skip_sslcert_validation: bool = False
    api_version: str = CLIENT_API_VERSION

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"the endpoint must be an http:// or https:// URL, got {self.endpoint!r}",
                variable="BACKEND_ENDPOINT",
            )
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> APIConfig:
        """Read the ``BACKEND_*`` (or ``SORNA_*``) variables.

        Raises ConfigError naming the variable that is missing or malformed.
        """
        env = _Env(os.environ if environ is None else environ)
        return cls(
            endpoint=env.required("ENDPOINT"),
            access_key=env.required("ACCESS_KEY"),
            secret_key=env.required("SECRET_KEY"),
            domain=env.get("DOMAIN") or "default",
            group=env.get("GROUP") or "default",
            connection_timeout=env.seconds("CONNECTION_TIMEOUT", 10.0),
            read_timeout=env.seconds("READ_TIMEOUT", None),
            skip_sslcert_validation=env.flag("SKIP_SSLCERT_VALIDATION"),
        )


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, key: str) -> str | None:
        for prefix in _PREFIXES:
            value = self._environ.get(prefix + key)
            if value is not None:
                return value.strip()
        return None

    def required(self, key: str) -> str:
        value = self.get(key)
        if not value:
            raise ConfigError(f"BACKEND_{key} is not set", variable=f"BACKEND_{key}")
        return value

    def seconds(self, key: str, default: float | None) -> float | None:
        """A timeout in seconds; 0 or empty means no limit."""
        value = self.get(key)
        if value is None:
            return default
        try:
            seconds = float(value) if value else 0.0
        except ValueError:
            raise ConfigError(
                f"BACKEND_{key} must be a number of seconds, got {value!r}", variable=f"BACKEND_{key}"
            ) from None
        if seconds < 0:
            raise ConfigError(f"BACKEND_{key} must not be negative", variable=f"BACKEND_{key}")
        return seconds or None

    def flag(self, key: str) -> bool:
        value = (self.get(key) or "").lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(f"BACKEND_{key} must be true or false, got {value!r}", variable=f"BACKEND_{key}")
