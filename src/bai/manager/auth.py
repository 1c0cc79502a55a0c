"""Request authentication (API.md section 2), free of any web framework: the
API edge hands in the request's parts and gets the keypair or a domain error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from bai.common import signing
from bai.common.errors import AuthFailed, BadRequest, InvalidAuthParams
from bai.common.versions import ACCEPTED_VERSIONS, ApiVersion
from bai.manager.keypairs import Keypair, KeypairRegistry


@dataclass(frozen=True)
class SignedRequest:
    method: str
    raw_path: str  # path with query string, exactly as sent (with any /vN prefix)
    headers: Mapping[str, str]  # lower-case names
    body: bytes


def request_version(headers: Mapping[str, str]) -> ApiVersion:
    value = headers.get("x-backendai-version") or headers.get("x-sorna-version")
    if not value:
        raise BadRequest("X-BackendAI-Version: the header is required")
    if value not in ACCEPTED_VERSIONS:
        raise BadRequest(f"X-BackendAI-Version: unsupported API version {value!r}")
    return ApiVersion.parse(value)


def authenticate(
    request: SignedRequest, keypairs: KeypairRegistry, now: datetime, max_skew_s: float
) -> Keypair:
    """Return the request's active keypair, or raise InvalidAuthParams / AuthFailed / BadRequest."""
    headers = request.headers
    version = request_version(headers)
    authorization = headers.get("authorization")
    if not authorization:
        raise InvalidAuthParams("Authorization: the header is required")
    try:
        hash_name, access_key, signature = signing.parse_authorization(authorization)
    except ValueError as exc:
        raise InvalidAuthParams(str(exc)) from None
    date_header = headers.get("date") or headers.get("x-backendai-date") or headers.get("x-sorna-date")
    if not date_header:
        raise InvalidAuthParams("Date: the header (or X-BackendAI-Date) is required")
    try:
        date = signing.parse_date(date_header)
    except ValueError:
        raise InvalidAuthParams(f"Date: not an ISO 8601 date: {date_header!r}") from None
    if abs((now - date).total_seconds()) > max_skew_s:
        raise InvalidAuthParams("Date: the request's clock is more than 15 minutes off the server's")
    keypair = keypairs.get(access_key)
    if keypair is None or not keypair.is_active:
        raise AuthFailed("the access key is unknown or inactive")
    if keypair.expired(now):
        raise AuthFailed("the access key has expired")
    host = headers.get("host", "")
    content_type = headers.get("content-type")
    # API v1–v3 hash the body, except multipart bodies, which they hash as empty
    body = b"" if (content_type or "").lower().startswith("multipart/") else request.body
    expected = signing.sign(
        secret_key=keypair.secret_key,
        method=request.method,
        path_with_query=request.raw_path,
        date_header=date_header,
        host=host,
        content_type=content_type,
        api_version=str(version),
        body=body,
        hash_name=hash_name,
    )
    if not signing.signatures_match(expected, signature):
        raise AuthFailed("the signature does not match the request")
    return keypair
