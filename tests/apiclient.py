"""A deliberately small signed HTTP client for API tests, independent of the SDK
(it shares only bai.common.signing with it), so a wire-level test can bend any part
of a request (date, version, signature)."""

from __future__ import annotations

import io
import json
import secrets
import tarfile
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from bai.common.signing import signed_headers

VERSION = "v8.20240915"


class SignedClient:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, version: str = VERSION) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.access_key = access_key
        self.secret_key = secret_key
        self.version = version
        self.host = urlsplit(self.endpoint).netloc
        self.http = httpx.Client(base_url=self.endpoint, timeout=60)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SignedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def headers(self, method: str, path: str, body: bytes, content_type: str | None,
                date: datetime | None = None, version: str | None = None) -> dict[str, str]:
        headers = signed_headers(
            access_key=self.access_key, secret_key=self.secret_key, api_version=version or self.version,
            method=method, path_with_query=path, host=self.host, content_type=content_type, body=body,
            now=date or datetime.now(UTC),
        )
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                date: datetime | None = None, version: str | None = None,
                extra_headers: dict[str, str] | None = None) -> httpx.Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        content_type = "application/json" if data else None
        headers = self.headers(method, path, data, content_type, date, version)
        headers.update(extra_headers or {})
        return self.http.request(method, path, content=data, headers=headers)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PATCH", path, **kw)

    def run(self, session: str, code: str, *, flush_ok: bool = True) -> dict[str, Any]:
        """Run code to the end (following continued), returning the merged result."""
        result = self.post(f"/session/{session}", {"mode": "query", "code": code}).json()["result"]
        console = list(result["console"])
        while result["status"] == "continued" and flush_ok:
            result = self.post(f"/session/{session}", {"mode": "continue", "runId": result["runId"],
                                                        "code": ""}).json()["result"]
            console += result["console"]
        result["console"] = console
        return result


def multipart_form(files: list[tuple[str, bytes]], name: str = "src") -> tuple[str, bytes]:
    """A multipart/form-data body written by hand (so a test can put anything in a
    filename: NUL, '..', quotes); returns (content type, body)."""
    boundary = secrets.token_hex(12)
    body = b""
    for filename, content in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; ").encode()
        body += b'filename="' + filename.encode("utf-8", "surrogateescape") + b'"\r\n'
        body += b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def upload(client: SignedClient, session: str, files: list[tuple[str, bytes]], name: str = "src") -> httpx.Response:
    content_type, body = multipart_form(files, name)
    path = f"/session/{session}/upload"
    headers = client.headers("POST", path, b"", content_type)
    return client.http.post(path, content=body, headers=headers)


def download(client: SignedClient, session: str, paths: list[str]) -> httpx.Response:
    query = "&".join(f"files={quote(p, safe='')}" for p in paths)
    return client.post(f"/session/{session}/download?{query}")


def tars_of(response: httpx.Response) -> list[tarfile.TarFile]:
    """The tars of a multipart/mixed download answer."""
    media, _, params = response.headers["content-type"].partition(";")
    assert media.strip() == "multipart/mixed", response.headers["content-type"]
    boundary = params.strip().removeprefix("boundary=").strip('"').encode()
    body = response.content
    assert body.endswith(b"--" + boundary + b"--\r\n"), body[-200:]
    tars = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        _headers, _, content = chunk.partition(b"\r\n\r\n")
        assert content.endswith(b"\r\n")
        tars.append(tarfile.open(fileobj=io.BytesIO(content[:-2])))  # noqa: SIM115 (in memory)
    return tars


def stdout_of(result: dict[str, Any]) -> str:
    return "".join(data for kind, data in result["console"] if kind == "stdout")


def stderr_of(result: dict[str, Any]) -> str:
    return "".join(data for kind, data in result["console"] if kind == "stderr")


def following(api: SignedClient, session: str, first: dict[str, Any], until: str | None = None) -> list[dict[str, Any]]:
    """``first`` and the answers that continue its run: until the run has printed
    ``until`` on stdout (each answer before it still "continued": evidence that the user's
    code is running, on a host however busy), or with ``until`` None to the run's end."""
    answers = [first]
    while True:
        if until is not None and until in "".join(stdout_of(answer) for answer in answers):
            return answers
        if answers[-1]["status"] != "continued":
            assert until is None, (f"the run ended before it printed {until!r}", answers)
            return answers
        body = {"mode": "continue", "runId": first["runId"], "code": ""}
        answers.append(api.post(f"/session/{session}", body).json()["result"])
