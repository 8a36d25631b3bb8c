"""Deterministic splitting of one fuzz input into structured pieces.

Every engine hands a target plain bytes; targets that need several values (a mode,
a path, chunk boundaries) read them from the front of the input with a
:class:`Cursor`, so an input reproduces the same call under atheris, hypothesis or
a replay from a crash file.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["Cursor", "json_or_none"]


class Cursor:
    """Reads small integers and byte runs from a fuzz input; never raises."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        """Next byte, or 0 past the end."""
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def choice(self, n: int) -> int:
        """An index in ``range(n)``."""
        return self.byte() % n

    def take(self, n: int) -> bytes:
        """Up to ``n`` next bytes."""
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        """Everything not consumed yet."""
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def pieces(self, max_pieces: int = 16) -> list[bytes]:
        """The rest, cut at positions chosen by the input (for chunked feeding)."""
        count = 1 + self.choice(max_pieces)
        cuts = sorted(self.byte() for _ in range(count - 1))
        body = self.rest()
        if not body:
            return [b""]
        scale = max(1, len(body) // 256 + 1)
        out, prev = [], 0
        for c in cuts:
            at = min(len(body), c * scale)
            out.append(body[prev:at])
            prev = at
        out.append(body[prev:])
        return out


def json_or_none(data: bytes) -> Any:
    """``json.loads`` for harness use: None when the bytes are not (tractable) JSON.

    The harness must not crash on inputs the parser under test never sees, so
    decoding errors and over-deep nesting are both mapped to None here.
    """
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
