"""Splitting a byte stream into length-prefixed frames (the framing of protocol.py).

Splitting is kept apart from decoding so that one frame that does not decode costs
only itself: the stream stays in step and the frames after it are still read.
Used by the agent link (main side) and the control channels to the REPL child.
"""

from __future__ import annotations

from bai.runner.protocol import HEADER, MAX_FRAME

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing: milliseconds per start
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

# Bytes asked of each recv: under glibc's mmap threshold (128 KiB), so a recv costs
# no mmap/mremap/munmap round; bigger frames just take several.
RECV_SIZE = 65536


class FrameSplitter:
    """Feed it what ``recv`` returns; it hands back each complete frame's payload."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Tuple[List[bytes], Optional[str]]:
        """Return the complete payloads so far and, if the stream lost its framing
        (a length over ``MAX_FRAME``), why; the unread rest is then dropped."""
        buf = self._buf
        buf += data
        payloads: List[bytes] = []
        while len(buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(buf)
            if size > MAX_FRAME:
                buf.clear()
                return payloads, "frame of %d bytes is over the limit of %d" % (size, MAX_FRAME)
            end = HEADER.size + size
            if len(buf) < end:
                break
            payloads.append(bytes(buf[HEADER.size : end]))
            del buf[:end]
        return payloads, None
