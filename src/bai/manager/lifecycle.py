"""Which session status may follow which. I/O free; the statuses themselves are
``bai.common.status.SessionStatus``.

    PENDING → SCHEDULED → PREPARING → RUNNING ⇄ RESTARTING
       │          │           │          │
       └→ CANCELLED           └──────────┴→ TERMINATING → TERMINATED
    any live status → ERROR (agent lost, sandbox died, creation failed)
"""

from __future__ import annotations

from typing import Final

from bai.common.status import TERMINAL_SESSION_STATUSES, SessionStatus

S = SessionStatus

TERMINAL: Final = TERMINAL_SESSION_STATUSES
#: statuses a create request waits for
SETTLED: Final = frozenset({S.RUNNING}) | TERMINAL
#: statuses written to the store. The others are transient: a manager that restarts marks
#: every session that was not terminal ERROR ("manager-restarted") whatever it was, so
#: writing them would only cost time on the create and destroy paths (about 2 ms each).
PERSISTED: Final = frozenset({S.PENDING, S.RUNNING}) | TERMINAL

_NEXT: Final[dict[SessionStatus, frozenset[SessionStatus]]] = {
    S.PENDING: frozenset({S.SCHEDULED, S.CANCELLED, S.ERROR}),
    S.SCHEDULED: frozenset({S.PREPARING, S.CANCELLED, S.ERROR}),
    S.PREPARING: frozenset({S.RUNNING, S.TERMINATING, S.ERROR}),
    S.RUNNING: frozenset({S.RESTARTING, S.TERMINATING, S.ERROR}),
    S.RESTARTING: frozenset({S.RUNNING, S.TERMINATING, S.ERROR}),
    S.TERMINATING: frozenset({S.TERMINATED, S.ERROR}),
    S.TERMINATED: frozenset(),
    S.ERROR: frozenset(),
    S.CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    """A bug: the state machine asked for a status change the table forbids."""


def check_transition(current: SessionStatus, new: SessionStatus) -> None:
    if new not in _NEXT[current]:
        raise IllegalTransition(f"a session cannot go from {current} to {new}")
