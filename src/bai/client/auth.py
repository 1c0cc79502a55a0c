"""Request signing as the client does it (API.md section 2).

``RequestSigner`` signs a request exactly as it will be sent: for HTTP, the
httpx request after it is built (its raw path with the query, the ``Host``
header httpx computed, ``host`` alone on a default port and ``host:port``
otherwise, and the body's content type); for a WebSocket upgrade, the path and
the Host header websockets will send, signed like a GET with no content type.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from websockets.headers import build_host
from websockets.uri import parse_uri

from bai.common.signing import signed_headers

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class RequestSigner:
    """Signs with one keypair at one API version; ``clock`` is injectable for tests."""

    def __init__(self, access_key: str, secret_key: str, api_version: str, clock: Clock = utc_now) -> None:
        self.access_key = access_key
        self._secret_key = secret_key
        self.api_version = api_version
        self._clock = clock

    def sign_request(self, request: httpx.Request) -> None:
        """Add the signed headers to a built httpx request (its body already in memory,
        unless it is multipart: a multipart body is signed as empty, so it may stream)."""
        content_type = request.headers.get("Content-Type")
        multipart = (content_type or "").lower().startswith("multipart/")
        request.headers.update(
            self._headers(
                method=request.method,
                path_with_query=request.url.raw_path.decode("ascii"),
                host=request.headers["Host"],
                content_type=content_type,
                body=b"" if multipart else request.content,
            )
        )

    def websocket_headers(self, url: str) -> dict[str, str]:
        """The signed handshake headers of a ``ws://`` or ``wss://`` URL."""
        uri = parse_uri(url)
        return self._headers(
            method="GET",
            path_with_query=uri.resource_name,
            host=build_host(uri.host, uri.port, uri.secure),
            content_type=None,
            body=b"",
        )

    def _headers(
        self, *, method: str, path_with_query: str, host: str, content_type: str | None, body: bytes
    ) -> dict[str, str]:
        return signed_headers(
            access_key=self.access_key,
            secret_key=self._secret_key,
            api_version=self.api_version,
            method=method,
            path_with_query=path_with_query,
            host=host,
            content_type=content_type,
            body=body,
            now=self._clock(),
        )
