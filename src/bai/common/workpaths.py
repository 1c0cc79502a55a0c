"""Paths inside a session's /home/work, as the API names them.

One pure function shared by the manager (it refuses a bad path with a 400 before
any agent call) and the agent (it checks again before it touches the disk). A
path is lexically confined here; links are the agent's business (bai.agent.files
resolves every path with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS ...)``).
"""

from __future__ import annotations

WORK_DIR = "/home/work"
MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255


class WorkPathError(ValueError):
    """``path`` cannot name anything inside /home/work; the message says why."""


def work_path(raw: str, *, allow_absolute: bool = False, allow_root: bool = False) -> str:
    """``raw`` normalised to a relative path below /home/work ("a/b"), or "" for
    /home/work itself when ``allow_root``.

    Refused (WorkPathError): NUL, an empty path, a ``..`` component, a name over
    255 bytes, and an absolute path, except one under /home/work when
    ``allow_absolute`` (the official client lists "/home/work" by default).
    "." components, repeated and trailing slashes are dropped.
    """
    if "\x00" in raw:
        raise WorkPathError(f"{raw!r} contains a NUL character")
    if len(raw) > MAX_PATH_CHARS:
        raise WorkPathError(f"{raw[:64]!r}... is longer than {MAX_PATH_CHARS} characters")
    text = raw
    if text.startswith("/"):
        inside = text == WORK_DIR or text.startswith(WORK_DIR + "/")
        if not (allow_absolute and inside):
            raise WorkPathError(f"{raw!r} is not inside {WORK_DIR}" if not inside else f"{raw!r} must be relative")
        text = text[len(WORK_DIR) :]
    parts = [part for part in text.split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise WorkPathError(f"{raw!r} is not inside {WORK_DIR} (a '..' component)")
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise WorkPathError(f"{raw!r} has a name longer than {MAX_NAME_BYTES} bytes")
    if not parts and not allow_root:
        raise WorkPathError(f"{raw!r} names no file")
    return "/".join(parts)
