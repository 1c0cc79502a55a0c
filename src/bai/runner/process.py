"""Process-level facts the runner needs from Linux: the dumpable flag, the OOM score
adjustment, wait statuses. Standard library only; best effort where /proc or prctl
is not there."""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    from typing import Any, Optional, Tuple

PR_SET_DUMPABLE = 4
_libc: Optional[Any] = None


def set_dumpable(dumpable: bool) -> bool:
    """prctl(PR_SET_DUMPABLE): a non-dumpable runner cannot be ptraced, nor its
    /proc/<pid>/mem written, by the user's code running under the same uid.
    Best effort: returns False where prctl is not reachable."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        return bool(_libc.prctl(PR_SET_DUMPABLE, 1 if dumpable else 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def read_oom_score_adj() -> Optional[int]:
    try:
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def write_oom_score_adj(value: int) -> bool:
    """Raising the value needs no privilege; lowering it below the floor a privileged
    writer set does."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("%d" % value)
        return True
    except OSError:
        return False


def describe_exit(status: int) -> Tuple[int, str]:
    """A wait status as (shell-style exit code, words): 128+N for signal N."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        import signal  # noqa: PLC0415 (here only: a child killed by a signal is rare)

        try:
            name = " (%s)" % signal.Signals(number).name
        except ValueError:
            name = ""
        return 128 + number, "killed by signal %d%s" % (number, name)
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return code, "exited with status %d" % code
    return 1, "ended with wait status %d" % status
