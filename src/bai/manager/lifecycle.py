"""The session state machine: which status may follow which. I/O free.

    PENDING → SCHEDULED → PREPARING → RUNNING ⇄ RESTARTING
       │          │           │          │
       └→ CANCELLED           └──────────┴→ TERMINATING → TERMINATED
    any live status → ERROR (agent lost, sandbox died, creation failed)
"""

from __future__ import annotations

from typing import Final

PENDING: Final = "PENDING"
SCHEDULED: Final = "SCHEDULED"
PREPARING: Final = "PREPARING"
RUNNING: Final = "RUNNING"
RESTARTING: Final = "RESTARTING"
TERMINATING: Final = "TERMINATING"
TERMINATED: Final = "TERMINATED"
ERROR: Final = "ERROR"
CANCELLED: Final = "CANCELLED"

TERMINAL: Final = frozenset({TERMINATED, ERROR, CANCELLED})
#: statuses a create request waits for
SETTLED: Final = frozenset({RUNNING}) | TERMINAL
#: statuses written to the store. The others are transient: a manager that restarts marks
#: every session that was not terminal ERROR ("manager-restarted") whatever it was, so
#: writing them would only cost time on the create and destroy paths (about 2 ms each).
PERSISTED: Final = frozenset({PENDING, RUNNING}) | TERMINAL

_NEXT: Final[dict[str, frozenset[str]]] = {
    PENDING: frozenset({SCHEDULED, CANCELLED, ERROR}),
    SCHEDULED: frozenset({PREPARING, CANCELLED, ERROR}),
    PREPARING: frozenset({RUNNING, TERMINATING, ERROR}),
    RUNNING: frozenset({RESTARTING, TERMINATING, ERROR}),
    RESTARTING: frozenset({RUNNING, TERMINATING, ERROR}),
    TERMINATING: frozenset({TERMINATED, ERROR}),
    TERMINATED: frozenset(),
    ERROR: frozenset(),
    CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    pass


def check_transition(current: str, new: str) -> None:
    if new not in _NEXT[current]:
        raise IllegalTransition(f"a session cannot go from {current} to {new}")
