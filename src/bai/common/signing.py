"""HMAC request signing of the Backend.AI API (API.md section 2).

Pure functions shared by the SDK (to sign) and the manager (to verify). Nothing
here does I/O or knows a web framework.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from bai.common.versions import ApiVersion

#: From this version on the body is not hashed (the last line is ``hash(b"")``).
BODY_HASH_DROPPED_IN = ApiVersion.parse("v4.20181215")
DEFAULT_HASH = "sha256"


def parse_date(value: str) -> datetime:
    """Parse an ISO 8601 request date; a date without a zone is UTC.

    Raises ValueError when the value is not a date.
    """
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def body_is_hashed(version: ApiVersion) -> bool:
    return version < BODY_HASH_DROPPED_IN


def string_to_sign(
    *,
    method: str,
    path_with_query: str,
    date_header: str,
    host: str,
    content_type: str | None,
    api_version: str,
    body: bytes,
    hash_name: str = DEFAULT_HASH,
) -> str:
    version = ApiVersion.parse(api_version)
    media_type = (content_type or "application/octet-stream").split(";", 1)[0].strip().lower()
    hashed = body if body_is_hashed(version) else b""
    body_digest = hashlib.new(hash_name, hashed).hexdigest()
    return "\n".join(
        [
            method.upper(),
            path_with_query,
            date_header,
            f"host:{host}",
            f"content-type:{media_type}",
            f"x-backendai-version:{api_version}",
            body_digest,
        ]
    )


def signing_key(secret_key: str, date_utc: datetime, host: str, hash_name: str = DEFAULT_HASH) -> bytes:
    k1 = hmac.new(secret_key.encode(), date_utc.strftime("%Y%m%d").encode(), hash_name).digest()
    return hmac.new(k1, host.encode(), hash_name).digest()


def sign(
    *,
    secret_key: str,
    method: str,
    path_with_query: str,
    date_header: str,
    host: str,
    content_type: str | None,
    api_version: str,
    body: bytes = b"",
    hash_name: str = DEFAULT_HASH,
) -> str:
    """Return the hex signature of one request."""
    key = signing_key(secret_key, parse_date(date_header), host, hash_name)
    message = string_to_sign(
        method=method,
        path_with_query=path_with_query,
        date_header=date_header,
        host=host,
        content_type=content_type,
        api_version=api_version,
        body=body,
        hash_name=hash_name,
    )
    return hmac.new(key, message.encode(), hash_name).hexdigest()


def authorization_header(access_key: str, signature: str, hash_name: str = DEFAULT_HASH) -> str:
    return f"BackendAI signMethod=HMAC-{hash_name.upper()}, credential={access_key}:{signature}"


def parse_authorization(value: str) -> tuple[str, str, str]:
    """Split an Authorization header into (hash name, access key, signature).

    Raises ValueError naming what is wrong.
    """
    scheme, _, params = value.strip().partition(" ")
    if scheme not in ("BackendAI", "Sorna"):
        raise ValueError("Authorization: the scheme must be BackendAI")
    fields: dict[str, str] = {}
    for part in params.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key.strip()] = val.strip()
    method = fields.get("signMethod", "")
    credential = fields.get("credential", "")
    algo, sep, hash_label = method.partition("-")
    if algo.upper() != "HMAC" or not sep:
        raise ValueError("Authorization: signMethod must be HMAC-<hash>")
    hash_name = hash_label.lower()
    if hash_name not in hashlib.algorithms_guaranteed or hash_name.startswith("shake"):
        raise ValueError(f"Authorization: unsupported hash {hash_label!r}")
    access_key, sep, signature = credential.partition(":")
    if not sep or not access_key or not signature:
        raise ValueError("Authorization: credential must be <access key>:<signature>")
    return hash_name, access_key, signature


def signatures_match(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.lower().encode())


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
