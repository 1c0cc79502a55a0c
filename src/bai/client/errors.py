"""The client's errors, and the one table that maps the server's problem+json back to them.

Every error the SDK raises on purpose is a ``bai.common.errors.BaiError``:

    BaiError
    ├── ServerError               the server answered with a problem+json error
    │     mixed into the matching domain class, so a 404 ``object-not-found``
    │     is both a ``SessionNotFound`` and a ``ServerError`` (``.status``,
    │     ``.slug``, ``.title``); a slug we do not know is a plain ServerError
    └── ClientError               it went wrong on this side of the wire
        ├── ConfigError           a missing or malformed variable; ``.variable`` names it
        ├── ConnectionFailed      the endpoint could not be reached (refused, DNS, TLS, timeout)
        └── ProtocolError         the server answered something that is not the Backend.AI API

httpx and websockets exceptions never leave the SDK: they are re-raised as
ConnectionFailed or ProtocolError ``from`` the original.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from bai.common import errors as domain
from bai.common.errors import BaiError
from bai.common.problems import PROBLEMS

PROBLEM_TYPE_PREFIX = "https://api.backend.ai/probs/"


class ServerError(BaiError):
    """An error answer from the server.

    Raised as an instance of a class generated from this one and the domain
    class its slug names (see PROBLEM_CLASSES), so callers catch either.
    """

    def __init__(self, message: str, *, status: int, slug: str, title: str = "", data: Any = None) -> None:
        BaiError.__init__(self, message, data=data)
        self.status = status
        self.slug = slug
        self.title = title
        # The domain classes' own attributes, recovered from the problem's data.
        if isinstance(self, domain.SessionAlreadyExists):
            existing = data.get("existingSessionId") if isinstance(data, dict) else None
            self.existing_session_id = str(existing or "")
        if isinstance(self, domain.InvalidRequest):
            field = data.get("field") if isinstance(data, dict) else None
            self.field = str(field) if field else None


class ClientError(BaiError):
    """Something went wrong before a server's answer could be had or understood."""


class ConfigError(ClientError):
    def __init__(self, message: str, *, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


class ConnectionFailed(ClientError):
    pass


class ProtocolError(ClientError):
    pass


def _most_specific(classes: list[type[BaiError]]) -> type[BaiError]:
    """Of the classes that share a slug, the one below all the others (SessionNotFound of
    NotFound's "object-not-found"): catching either of them then works."""
    return next((c for c in classes if all(issubclass(c, other) for other in classes)), classes[0])


def _slug_classes() -> dict[str, type[BaiError]]:
    by_slug: dict[str, list[type[BaiError]]] = {}
    for cls, problem in PROBLEMS.items():
        by_slug.setdefault(problem.slug, []).append(cls)
    return {slug: _most_specific(classes) for slug, classes in by_slug.items()} | FOREIGN_SLUGS


#: slugs that Backend.AI's servers send and ours never does
FOREIGN_SLUGS: dict[str, type[BaiError]] = {
    "vfolder-already-exists": domain.BadRequest,
    "graphql-error": domain.BadRequest,
    "service-unavailable": domain.ServiceUnavailable,
}
#: problem+json slug (API.md section 3) → the domain class raised for it: the server's
#: own table (bai.common.problems) read backwards, and FOREIGN_SLUGS
_SLUG_TO_DOMAIN: dict[str, type[BaiError]] = _slug_classes()


def _server_error_class(base: type[BaiError]) -> type[ServerError]:
    generated = type(base.__name__, (ServerError, base), {"__module__": __name__})
    if not issubclass(generated, ServerError):  # always true: narrows the type for mypy
        raise TypeError(generated)
    return generated


_GENERATED = {base: _server_error_class(base) for base in set(_SLUG_TO_DOMAIN.values())}
#: problem+json slug → the class raised: ServerError and the domain class at once.
PROBLEM_CLASSES: dict[str, type[ServerError]] = {slug: _GENERATED[base] for slug, base in _SLUG_TO_DOMAIN.items()}


def error_from_problem(status: int, body: bytes, *, reason: str = "") -> ServerError:
    """Build the error for one non-2xx answer.

    ``body`` is the raw answer; problem+json is expected, anything else (a
    proxy's HTML page) still gives a ServerError naming the HTTP status.
    """
    fallback = f"HTTP {status} {reason}".strip()
    try:
        problem = Problem.model_validate_json(body)
    except ValidationError:
        return ServerError(fallback, status=status, slug="", title=reason)
    slug = problem.type.removeprefix(PROBLEM_TYPE_PREFIX) if problem.type.startswith(PROBLEM_TYPE_PREFIX) else ""
    message = problem.msg or problem.detail or problem.title or fallback
    error_class = PROBLEM_CLASSES.get(slug, ServerError)
    return error_class(message, status=status, slug=slug, title=problem.title, data=problem.data)


class Problem(BaseModel):
    """An ``application/problem+json`` body (API.md section 3); RFC 7807's ``detail`` is read too."""

    type: str = ""
    title: str = ""
    msg: str | None = None
    detail: str | None = None
    data: Any = None
