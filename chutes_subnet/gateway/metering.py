"""Reading plaintext usage counts out of a miner's response without buffering it.

Non-stream responses carry ``X-E2E-Usage: {"prompt_tokens": .., "completion_tokens": ..}``.
Streams carry one plaintext ``data: {"usage": {...}}`` SSE event next to the encrypted
frames. :class:`UsageSniffer` is fed the stream's byte chunks as they are passed on to
the client and remembers the last usage event; it keeps at most one partial line, and
stops keeping a partial line as soon as it cannot be a usage event (encrypted frames
can be long), so memory stays bounded whatever the miner sends.
"""

from __future__ import annotations

from chutes_subnet.protocol import parse_json

__all__ = ["UsageSniffer", "parse_usage", "parse_usage_header"]

_USAGE_PREFIX = b'data: {"usage"'
_MAX_USAGE_LINE = 4096


def parse_usage(obj: object) -> tuple[int, int] | None:
    """``(prompt_tokens, completion_tokens)`` from a usage dict, or None if malformed."""
    if not isinstance(obj, dict):
        return None
    p, c = obj.get("prompt_tokens", 0), obj.get("completion_tokens", 0)
    if not isinstance(p, int) or not isinstance(c, int) or isinstance(p, bool) \
            or isinstance(c, bool) or p < 0 or c < 0:
        return None
    return p, c


def parse_usage_header(value: str | None) -> tuple[int, int] | None:
    """Parse an ``X-E2E-Usage`` header value (bounded), or None."""
    if not value or len(value) > _MAX_USAGE_LINE:
        return None
    try:
        return parse_usage(parse_json(value))
    except ValueError:
        return None


class UsageSniffer:
    """Incremental SSE line scanner that keeps the last ``usage`` event."""

    __slots__ = ("_partial", "_skipping", "usage")

    def __init__(self) -> None:
        self._partial = b""
        self._skipping = False
        self.usage: tuple[int, int] | None = None

    def feed(self, chunk: bytes) -> None:
        """Scan one chunk of the stream."""
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                self._keep(chunk[start:])
                return
            piece = chunk[start:nl]
            if self._skipping:
                self._skipping = False
            else:
                self._line(self._partial + piece)
            self._partial = b""
            start = nl + 1

    def _keep(self, tail: bytes) -> None:
        if self._skipping or not tail:
            return
        line = self._partial + tail
        head = line[: len(_USAGE_PREFIX)]
        if len(line) > _MAX_USAGE_LINE or not _USAGE_PREFIX.startswith(head):
            self._partial, self._skipping = b"", True
        else:
            self._partial = line

    def _line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line.startswith(_USAGE_PREFIX) or len(line) > _MAX_USAGE_LINE:
            return
        try:
            event = parse_json(line[6:])
        except ValueError:
            return
        parsed = parse_usage(event.get("usage")) if isinstance(event, dict) else None
        if parsed is not None:
            self.usage = parsed
