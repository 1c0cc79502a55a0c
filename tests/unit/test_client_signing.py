"""The SDK signs what it sends: the API.md vectors through the client's own request building."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from bai.client import APIConfig, AsyncSession
from bai.common import signing

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ACCESS = "AKIAIOSFODNN7EXAMPLE"
DATE = datetime(2024, 1, 1, tzinfo=UTC)


def session(endpoint: str = "http://127.0.0.1:8091", version: str = "v8.20240915") -> AsyncSession:
    config = APIConfig(endpoint=endpoint, access_key=ACCESS, secret_key=SECRET, api_version=version)
    return AsyncSession(config, clock=lambda: DATE)


async def test_v8_vector_through_the_client() -> None:
    async with session() as api:
        request = api.build_request("POST", "/session", json={"image": "python", "name": "demo"})
    assert request.headers["Host"] == "127.0.0.1:8091"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Date"] == "2024-01-01T00:00:00+00:00"
    assert request.headers["X-BackendAI-Version"] == "v8.20240915"
    assert request.headers["Authorization"] == (
        f"BackendAI signMethod=HMAC-SHA256, credential={ACCESS}:"
        "085f6ab0c6b00614b45adb224d0f85b5eb72a1c54e233b6e44f58a85af741902"
    )


async def test_v2_vector_through_the_signer() -> None:
    """Pre-v4 versions hash the body: the signer must read the request's real bytes."""
    body = b'{"lang": "python", "clientSessionToken": "abcd1234"}'
    async with session(version="v2.20170315") as api:
        request = httpx.Request(
            "POST",
            "http://127.0.0.1:8091/v2/kernel/create",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        api.signer.sign_request(request)
    assert request.headers["Authorization"].endswith(
        ":f479966a9e548b4b646feb74c24668310b511ce039f253a73e6fcad2a9e72331"
    )


async def test_the_query_string_is_signed_as_sent() -> None:
    async with session() as api:
        request = api.build_request("GET", "/session", params={"all": "true"})
    assert request.url.raw_path == b"/session?all=true"
    expected = signing.sign(
        secret_key=SECRET,
        method="GET",
        path_with_query="/session?all=true",
        date_header=request.headers["Date"],
        host="127.0.0.1:8091",
        content_type=None,
        api_version="v8.20240915",
    )
    assert request.headers["Authorization"].endswith(":" + expected)


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        ("http://example.com", "example.com"),
        ("https://example.com:443", "example.com"),
        ("https://example.com:8443/", "example.com:8443"),
    ],
)
async def test_the_host_header_signed_is_the_one_sent(endpoint: str, host: str) -> None:
    async with session(endpoint) as api:
        request = api.build_request("GET", "/")
    assert request.headers["Host"] == host
    expected = signing.sign(
        secret_key=SECRET,
        method="GET",
        path_with_query="/",
        date_header=request.headers["Date"],
        host=host,
        content_type=None,
        api_version="v8.20240915",
    )
    assert request.headers["Authorization"].endswith(":" + expected)


@pytest.mark.parametrize(
    ("endpoint", "url", "host"),
    [
        ("http://127.0.0.1:8091", "ws://127.0.0.1:8091/stream/session/abc/execute", "127.0.0.1:8091"),
        ("https://example.com", "wss://example.com/stream/session/abc/execute", "example.com"),
    ],
)
async def test_websocket_upgrades_are_signed_like_a_get_without_content_type(
    endpoint: str, url: str, host: str
) -> None:
    async with session(endpoint) as api:
        assert api.websocket_url("/stream/session/abc/execute") == url
        headers = api.signer.websocket_headers(url)
    expected = signing.sign(
        secret_key=SECRET,
        method="GET",
        path_with_query="/stream/session/abc/execute",
        date_header="2024-01-01T00:00:00+00:00",
        host=host,
        content_type="application/octet-stream",
        api_version="v8.20240915",
    )
    assert headers["Authorization"] == signing.authorization_header(ACCESS, expected)
    assert headers["X-BackendAI-Version"] == "v8.20240915"
