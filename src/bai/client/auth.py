"""Request signing as the client does it (API.md section 2).

The HTTP requests are signed by ``HMACAuth``, an httpx auth flow, so it sees
the request exactly as httpx will send it: the raw path with its query, the
``Host`` header httpx computed (``host`` alone on a default port,
``host:port`` otherwise) and the body's content type. WebSocket upgrades are
signed through ``signed_headers`` too, with the Host header websockets sends.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import UTC, datetime

import httpx

from bai.common.signing import authorization_header, sign


def utc_now() -> datetime:
    return datetime.now(UTC)


def signed_headers(
    *,
    access_key: str,
    secret_key: str,
    api_version: str,
    method: str,
    path_with_query: str,
    host: str,
    content_type: str | None,
    body: bytes = b"",
    now: datetime,
) -> dict[str, str]:
    """The Date, version and Authorization headers of one request."""
    date_header = now.astimezone(UTC).isoformat()
    signature = sign(
        secret_key=secret_key,
        method=method,
        path_with_query=path_with_query,
        date_header=date_header,
        host=host,
        content_type=content_type,
        api_version=api_version,
        body=body,
    )
    return {
        "Date": date_header,
        "X-BackendAI-Version": api_version,
        "Authorization": authorization_header(access_key, signature),
    }


class HMACAuth(httpx.Auth):
    """Signs every request of an httpx client with one keypair.

    ``clock`` is injectable so that tests can sign at a fixed date.
    """

    # Pre-v4 versions hash the body, so the flow must see it.
    requires_request_body = True

    def __init__(
        self, access_key: str, secret_key: str, api_version: str, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self._api_version = api_version
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(
            signed_headers(
                access_key=self._access_key,
                secret_key=self._secret_key,
                api_version=self._api_version,
                method=request.method,
                path_with_query=request.url.raw_path.decode("ascii"),
                host=request.headers["Host"],
                content_type=request.headers.get("Content-Type"),
                body=request.content,
                now=self._clock(),
            )
        )
        yield request
