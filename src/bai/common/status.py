"""The statuses of a session and of a run: one declaration each, used on the wire (the
Backend.AI spellings are the values), in the manager's state machine, by the agent and by
the SDK. Both are ``StrEnum``: a member equals its wire string and serialises as it.

Which session status may follow which is the manager's business
(``bai.manager.lifecycle``); the sets here are what every reader of a status needs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class SessionStatus(StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"

    @property
    def ended(self) -> bool:
        """Whether the session is over (nothing follows this status)."""
        return self in TERMINAL_SESSION_STATUSES


class RunStatus(StrEnum):
    """The ``status`` of an execute answer (API.md section 6)."""

    #: the run goes on; ask again with mode "continue"
    CONTINUED = "continued"
    #: the run reads stdin; answer with mode "input"
    WAITING_INPUT = "waiting-input"
    #: a batch run's clean / build step ended; the next step follows on "continue"
    CLEAN_FINISHED = "clean-finished"
    BUILD_FINISHED = "build-finished"
    FINISHED = "finished"
    EXEC_TIMEOUT = "exec-timeout"

    @property
    def goes_on(self) -> bool:
        """Whether the run is still in progress after this answer (a client asks again
        with mode "continue"); ``waiting-input`` is neither going on nor over: it waits."""
        return self in _GOING_ON

    @property
    def final(self) -> bool:
        """Whether this is the run's last answer."""
        return self in _FINAL


TERMINAL_SESSION_STATUSES: Final = frozenset(
    {SessionStatus.TERMINATED, SessionStatus.ERROR, SessionStatus.CANCELLED}
)
_GOING_ON: Final = frozenset({RunStatus.CONTINUED, RunStatus.CLEAN_FINISHED, RunStatus.BUILD_FINISHED})
_FINAL: Final = frozenset({RunStatus.FINISHED, RunStatus.EXEC_TIMEOUT})
