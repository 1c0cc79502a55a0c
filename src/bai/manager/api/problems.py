"""Domain errors → problem+json (API.md section 3): the one table."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from bai.common import errors as e

PROBLEM_BASE = "https://api.backend.ai/probs/"

#: class → (slug, status, title); the most specific class wins (looked up along the MRO)
PROBLEMS: dict[type[e.BaiError], tuple[str, int, str]] = {
    e.InvalidRequest: ("invalid-api-params", 400, "Missing or invalid API parameters."),
    e.RequestTooLarge: ("request-too-large", 413, "The request is larger than the server allows."),
    e.BadRequest: ("generic-bad-request", 400, "Bad request."),
    e.InvalidAuthParams: ("invalid-auth-params", 400, "Missing or invalid authorization parameters."),
    e.SessionAlreadyExists: ("session-already-exists", 400, "The session already exists but you requested not to reuse existing one."),  # noqa: E501
    e.NotImplementedFeature: ("not-implemented", 400, "This feature is not implemented."),
    e.AuthFailed: ("auth-failed", 401, "Credential/signature mismatch."),
    e.Forbidden: ("generic-forbidden", 403, "Forbidden operation."),
    e.InsufficientPrivilege: ("insufficient-privilege", 403, "Insufficient privilege."),
    e.NotFound: ("object-not-found", 404, "No such object."),
    e.SessionNotFound: ("object-not-found", 404, "No such session."),
    e.UrlNotFound: ("url-not-found", 404, "Unknown URL path."),
    e.TooManySessionsMatched: ("too-many-sessions-matched", 404, "Too many sessions matched."),
    e.MethodNotAllowed: ("method-not-allowed", 405, "HTTP Method Not Allowed."),
    e.QuotaExceeded: ("quota-exceeded", 412, "You have reached your resource limit."),
    e.RateLimitExceeded: ("rate-limit-exceeded", 429, "You have reached your API query rate limit."),
    e.OperationFailed: ("internal-server-error", 500, "Something has gone wrong."),
    e.SessionCreationFailed: ("kernel-creation-failed", 500, "Kernel creation has failed."),
    e.SessionDestructionFailed: ("kernel-destruction-failed", 500, "Kernel destruction has failed."),
    e.SessionRestartFailed: ("kernel-restart-failed", 500, "Kernel restart has failed."),
    e.ExecutionFailed: ("kernel-execution-failed", 500, "Executing user code in the kernel has failed."),
    e.StorageFull: ("insufficient-storage", 507, "The session's storage is full."),
    e.ServiceUnavailable: ("instance-not-available", 503, "There is no available instance."),
    e.BaiError: ("internal-server-error", 500, "Something has gone wrong."),
}


def classify(exc: e.BaiError) -> tuple[str, int, str]:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return PROBLEMS[e.BaiError]


def problem(slug: str, status: int, title: str, msg: str, data: Any = None) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "msg": msg}
    if data is not None:
        body["data"] = data
    return Response(json.dumps(body), status_code=status, media_type="application/problem+json")


def problem_for(exc: e.BaiError) -> Response:
    slug, status, title = classify(exc)
    return problem(slug, status, title, exc.message, exc.data)
