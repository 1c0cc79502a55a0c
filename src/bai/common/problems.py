"""Each domain error's problem+json slug, HTTP status and title (API.md section 3):
the one table, keyed by the error tree (bai.common.errors).

Two edges answer with it: the manager's API (bai.manager.api.problems, which writes the
problem+json body) and the agent RPC (bai.agent.rpc, which takes the status for its
``RpcError`` answers). The domain errors themselves know nothing of HTTP.
"""

from __future__ import annotations

from typing import NamedTuple

from bai.common import errors as e


class Problem(NamedTuple):
    slug: str
    status: int
    title: str


#: class → its problem; the most specific class wins (looked up along the MRO)
PROBLEMS: dict[type[e.BaiError], Problem] = {
    e.InvalidRequest: Problem("invalid-api-params", 400, "Missing or invalid API parameters."),
    e.RequestTooLarge: Problem("request-too-large", 413, "The request is larger than the server allows."),
    e.BadRequest: Problem("generic-bad-request", 400, "Bad request."),
    e.InvalidAuthParams: Problem("invalid-auth-params", 400, "Missing or invalid authorization parameters."),
    e.SessionAlreadyExists: Problem("session-already-exists", 400, "The session already exists but you requested not to reuse existing one."),  # noqa: E501
    e.NotImplementedFeature: Problem("not-implemented", 400, "This feature is not implemented."),
    e.AuthFailed: Problem("auth-failed", 401, "Credential/signature mismatch."),
    e.Forbidden: Problem("generic-forbidden", 403, "Forbidden operation."),
    e.InsufficientPrivilege: Problem("insufficient-privilege", 403, "Insufficient privilege."),
    e.NotFound: Problem("object-not-found", 404, "No such object."),
    e.SessionNotFound: Problem("object-not-found", 404, "No such session."),
    e.UrlNotFound: Problem("url-not-found", 404, "Unknown URL path."),
    e.TooManySessionsMatched: Problem("too-many-sessions-matched", 404, "Too many sessions matched."),
    e.MethodNotAllowed: Problem("method-not-allowed", 405, "HTTP Method Not Allowed."),
    e.QuotaExceeded: Problem("quota-exceeded", 412, "You have reached your resource limit."),
    e.RateLimitExceeded: Problem("rate-limit-exceeded", 429, "You have reached your API query rate limit."),
    e.OperationFailed: Problem("internal-server-error", 500, "Something has gone wrong."),
    e.SessionCreationFailed: Problem("kernel-creation-failed", 500, "Kernel creation has failed."),
    e.SessionDestructionFailed: Problem("kernel-destruction-failed", 500, "Kernel destruction has failed."),
    e.SessionRestartFailed: Problem("kernel-restart-failed", 500, "Kernel restart has failed."),
    e.ExecutionFailed: Problem("kernel-execution-failed", 500, "Executing user code in the kernel has failed."),
    e.StorageFull: Problem("insufficient-storage", 507, "The session's storage is full."),
    e.ServiceUnavailable: Problem("instance-not-available", 503, "There is no available instance."),
    e.BaiError: Problem("internal-server-error", 500, "Something has gone wrong."),
}


def classify(exc: e.BaiError) -> Problem:
    """The problem of ``exc``: that of its nearest class in the table."""
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return PROBLEMS[e.BaiError]
