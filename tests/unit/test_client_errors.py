"""problem+json answers become the domain errors of bai.common.errors; network failures become ours."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from bai.client import APIConfig, AsyncSession, ConnectionFailed, ProtocolError, ServerError
from bai.client.errors import PROBLEM_CLASSES, PROBLEM_TYPE_PREFIX, error_from_problem
from bai.common import errors as domain
from bai.common.problems import PROBLEMS

CONFIG = APIConfig(
    endpoint="http://127.0.0.1:8091",
    access_key="AKIAIOSFODNN7EXAMPLE",
    secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
)

EXPECTED = {
    "generic-bad-request": (domain.BadRequest, 400),
    "invalid-api-params": (domain.InvalidRequest, 400),
    "invalid-auth-params": (domain.InvalidAuthParams, 400),
    "session-already-exists": (domain.SessionAlreadyExists, 400),
    "not-implemented": (domain.NotImplementedFeature, 400),
    "auth-failed": (domain.AuthFailed, 401),
    "generic-forbidden": (domain.Forbidden, 403),
    "insufficient-privilege": (domain.InsufficientPrivilege, 403),
    "url-not-found": (domain.UrlNotFound, 404),
    "object-not-found": (domain.SessionNotFound, 404),
    "too-many-sessions-matched": (domain.TooManySessionsMatched, 404),
    "method-not-allowed": (domain.MethodNotAllowed, 405),
    "quota-exceeded": (domain.QuotaExceeded, 412),
    "rate-limit-exceeded": (domain.RateLimitExceeded, 429),
    "internal-server-error": (domain.OperationFailed, 500),
    "kernel-creation-failed": (domain.SessionCreationFailed, 500),
    "kernel-destruction-failed": (domain.SessionDestructionFailed, 500),
    "kernel-restart-failed": (domain.SessionRestartFailed, 500),
    "kernel-execution-failed": (domain.ExecutionFailed, 500),
    "service-unavailable": (domain.ServiceUnavailable, 503),
    "instance-not-available": (domain.ServiceUnavailable, 503),
}


def problem(slug: str, msg: str = "it went wrong", data: object = None) -> bytes:
    return json.dumps({"type": PROBLEM_TYPE_PREFIX + slug, "title": "A title.", "msg": msg, "data": data}).encode()


@pytest.mark.parametrize(("slug", "expected"), sorted(EXPECTED.items()))
def test_each_slug_raises_its_domain_class(slug: str, expected: tuple[type[Exception], int]) -> None:
    domain_class, status = expected
    error = error_from_problem(status, problem(slug))
    assert isinstance(error, domain_class)
    assert isinstance(error, ServerError)
    assert isinstance(error, domain.BaiError)
    assert (error.status, error.slug, error.title) == (status, slug, "A title.")
    assert str(error) == "it went wrong"


def test_every_slug_of_the_api_is_in_the_table() -> None:
    assert set(EXPECTED) <= set(PROBLEM_CLASSES)


@pytest.mark.parametrize("server_class", list(PROBLEMS), ids=lambda cls: cls.__name__)
def test_what_the_server_raises_the_sdk_raises_again(server_class: type[domain.BaiError]) -> None:
    """The SDK reads the server's own table backwards: whatever domain error a server
    answers with, a caller of the SDK catches it under the same class."""
    assert issubclass(PROBLEM_CLASSES[PROBLEMS[server_class].slug], server_class)


def test_the_domain_attributes_come_from_the_problem_data() -> None:
    exists = error_from_problem(400, problem("session-already-exists", data={"existingSessionId": "u-1"}))
    assert isinstance(exists, domain.SessionAlreadyExists)
    assert exists.existing_session_id == "u-1"
    invalid = error_from_problem(400, problem("invalid-api-params", data={"field": "image"}))
    assert isinstance(invalid, domain.InvalidRequest)
    assert invalid.field == "image"


def test_an_unknown_slug_is_a_plain_server_error() -> None:
    error = error_from_problem(418, problem("teapot"))
    assert type(error) is ServerError
    assert (error.status, error.slug, error.message) == (418, "teapot", "it went wrong")


def test_a_body_that_is_not_problem_json_names_the_status() -> None:
    error = error_from_problem(502, b"<html>Bad Gateway</html>", reason="Bad Gateway")
    assert type(error) is ServerError
    assert str(error) == "HTTP 502 Bad Gateway"


def test_the_title_stands_in_for_a_missing_msg() -> None:
    body = json.dumps({"type": PROBLEM_TYPE_PREFIX + "object-not-found", "title": "No such session."})
    assert str(error_from_problem(404, body.encode())) == "No such session."


async def test_a_request_raises_the_mapped_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404,
            content=problem("object-not-found", "no such session: demo"),
            headers={"Content-Type": "application/problem+json"},
        )

    async with AsyncSession(CONFIG, transport=httpx.MockTransport(answer)) as api:
        with pytest.raises(domain.SessionNotFound, match="no such session: demo") as caught:
            await api.ComputeSession("demo").info()
    assert isinstance(caught.value, ServerError)
    assert caught.value.status == 404


async def test_an_answer_that_is_not_the_api_is_a_protocol_error() -> None:
    async with AsyncSession(
        CONFIG, transport=httpx.MockTransport(lambda request: httpx.Response(200, json={"hello": 1}))
    ) as api:
        with pytest.raises(ProtocolError, match="unexpected answer to GET /"):
            await api.server_version()


async def test_connection_refused_names_the_endpoint() -> None:
    with socket.socket() as bound:  # bound, never listening: refused, and no one else's until closed
        bound.bind(("127.0.0.1", 0))
        await _refused(f"http://127.0.0.1:{bound.getsockname()[1]}")


async def _refused(endpoint: str) -> None:
    config = APIConfig(endpoint=endpoint, access_key="a" * 20, secret_key="s" * 40)
    async with AsyncSession(config) as api:
        with pytest.raises(ConnectionFailed) as caught:
            await api.server_version()
        assert str(caught.value) == f"cannot connect to {endpoint}: connection refused"
        with pytest.raises(ConnectionFailed, match="connection refused"):
            async with api.ComputeSession("demo").stream_execute("print(1)"):
                pass
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
