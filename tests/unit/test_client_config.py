"""Client config from BACKEND_* variables (API.md section 2), with the SORNA_* fallback."""

from __future__ import annotations

import pytest

from bai.client import APIConfig, ConfigError

BASE = {
    "BACKEND_ENDPOINT": "http://127.0.0.1:8091/",
    "BACKEND_ACCESS_KEY": "AKIAIOSFODNN7EXAMPLE",
    "BACKEND_SECRET_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


def test_reads_the_backend_variables_with_defaults() -> None:
    config = APIConfig.from_env(BASE)
    assert config.endpoint == "http://127.0.0.1:8091"
    assert config.access_key == "AKIAIOSFODNN7EXAMPLE"
    assert config.secret_key.endswith("EXAMPLEKEY")
    assert (config.domain, config.group) == ("default", "default")
    assert config.connection_timeout == 10.0
    assert config.read_timeout is None
    assert config.skip_sslcert_validation is False
    assert config.api_version == "v8.20240915"


def test_every_variable() -> None:
    env = {
        **BASE,
        "BACKEND_DOMAIN": "research",
        "BACKEND_GROUP": "team-a",
        "BACKEND_CONNECTION_TIMEOUT": "2.5",
        "BACKEND_READ_TIMEOUT": "30",
        "BACKEND_SKIP_SSLCERT_VALIDATION": "true",
    }
    config = APIConfig.from_env(env)
    assert (config.domain, config.group) == ("research", "team-a")
    assert (config.connection_timeout, config.read_timeout) == (2.5, 30.0)
    assert config.skip_sslcert_validation is True


def test_sorna_variables_are_the_fallback() -> None:
    env = {key.replace("BACKEND_", "SORNA_"): value for key, value in BASE.items()}
    env["BACKEND_ACCESS_KEY"] = "AKIABACKENDWINS00000"
    config = APIConfig.from_env(env)
    assert config.endpoint == "http://127.0.0.1:8091"
    assert config.access_key == "AKIABACKENDWINS00000"
    assert config.secret_key == BASE["BACKEND_SECRET_KEY"]


@pytest.mark.parametrize("missing", sorted(BASE))
def test_a_missing_variable_is_named(missing: str) -> None:
    env = {key: value for key, value in BASE.items() if key != missing}
    with pytest.raises(ConfigError, match=f"{missing} is not set") as caught:
        APIConfig.from_env(env)
    assert caught.value.variable == missing


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("BACKEND_ENDPOINT", "127.0.0.1:8091", "http:// or https://"),
        ("BACKEND_READ_TIMEOUT", "soon", "BACKEND_READ_TIMEOUT must be a number"),
        ("BACKEND_CONNECTION_TIMEOUT", "-1", "BACKEND_CONNECTION_TIMEOUT must not be negative"),
        ("BACKEND_SKIP_SSLCERT_VALIDATION", "maybe", "must be true or false"),
    ],
)
def test_a_malformed_variable_is_named(key: str, value: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as caught:
        APIConfig.from_env({**BASE, key: value})
    assert caught.value.variable == key


def test_zero_timeouts_mean_no_limit() -> None:
    config = APIConfig.from_env({**BASE, "BACKEND_CONNECTION_TIMEOUT": "0", "BACKEND_READ_TIMEOUT": "0"})
    assert (config.connection_timeout, config.read_timeout) == (None, None)
