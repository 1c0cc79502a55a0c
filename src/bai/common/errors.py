"""The domain error tree. No HTTP here: each class's problem+json slug and status are
in one table (bai.common.problems), which the manager's API edge and the agent RPC
answer with; the SDK maps problem+json back to these classes, and the manager's agent
clients an agent's ``RpcError`` (bai.common.agent_calls).

    BaiError
    ├── InvalidRequest            a body or parameter is wrong; ``field`` names it
    │   └── RequestTooLarge       past a size or count limit (HTTP 413)
    ├── BadRequest                a request that cannot be understood (bad version header...)
    ├── InvalidAuthParams         missing/garbled auth headers, clock skew
    ├── AuthFailed                unknown or inactive key, wrong signature
    ├── Forbidden                 not yours
    │   └── InsufficientPrivilege needs an admin keypair
    ├── NotFound                  no such object
    │   ├── SessionNotFound
    │   └── UrlNotFound
    ├── MethodNotAllowed
    ├── TooManySessionsMatched
    ├── SessionAlreadyExists      ``existing_session_id``
    ├── QuotaExceeded             a keypair at its concurrency limit
    ├── RateLimitExceeded
    ├── ServiceUnavailable        no agent can take the work
    ├── NotImplementedFeature
    └── OperationFailed           the work was tried and failed
        ├── SessionCreationFailed
        ├── SessionDestructionFailed
        ├── SessionRestartFailed
        ├── ExecutionFailed
        └── StorageFull           the session's /home/work has no room left (HTTP 507)
"""

from __future__ import annotations

from typing import Any


class BaiError(Exception):
    """The root of every error we raise on purpose."""

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class InvalidRequest(BaiError):
    def __init__(self, message: str, *, field: str | None = None, data: Any = None) -> None:
        super().__init__(message, data=data)
        self.field = field


class RequestTooLarge(InvalidRequest):
    pass


class BadRequest(BaiError):
    pass


class InvalidAuthParams(BaiError):
    pass


class AuthFailed(BaiError):
    pass


class Forbidden(BaiError):
    pass


class InsufficientPrivilege(Forbidden):
    pass


class NotFound(BaiError):
    pass


class SessionNotFound(NotFound):
    pass


class UrlNotFound(NotFound):
    pass


class MethodNotAllowed(BaiError):
    pass


class TooManySessionsMatched(BaiError):
    pass


class SessionAlreadyExists(BaiError):
    def __init__(self, message: str, *, existing_session_id: str) -> None:
        super().__init__(message, data={"existingSessionId": existing_session_id})
        self.existing_session_id = existing_session_id


class QuotaExceeded(BaiError):
    pass


class RateLimitExceeded(BaiError):
    pass


class ServiceUnavailable(BaiError):
    pass


class NotImplementedFeature(BaiError):
    pass


class OperationFailed(BaiError):
    pass


class SessionCreationFailed(OperationFailed):
    pass


class SessionDestructionFailed(OperationFailed):
    pass


class SessionRestartFailed(OperationFailed):
    pass


class ExecutionFailed(OperationFailed):
    pass


class StorageFull(OperationFailed):
    pass
