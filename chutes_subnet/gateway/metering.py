"""Reading plaintext usage counts out of a miner's response without buffering it.

Non-stream responses carry ``X-E2E-Usage`` (parsed by
:func:`chutes_subnet.wire.headers.parse_usage_header`). Streams carry one plaintext
``data: {"usage": {...}}`` SSE event next to the encrypted frames, parsed here with the
same :func:`~chutes_subnet.wire.headers.parse_usage`. :class:`UsageSniffer` is fed
the stream's byte chunks as they are passed on to the client and remembers the last usage event; it keeps at most one partial line, and
stops keeping a partial line as soon as it cannot be a usage event (encrypted frames
can be long), so memory stays bounded whatever the miner sends.
"""

from __future__ import annotations

from chutes_subnet.errors import UsageError
from chutes_subnet.wire.headers import MAX_USAGE_HEADER_CHARS, Usage, parse_usage
from chutes_subnet.wire.protocol import parse_json

__all__ = ["UsageSniffer"]

_USAGE_PREFIX = b'data: {"usage"'
_MAX_USAGE_LINE = MAX_USAGE_HEADER_CHARS


class UsageSniffer:
    """Incremental SSE line scanner that keeps the last ``usage`` event."""

    __slots__ = ("_partial", "_skipping", "usage")

    def __init__(self) -> None:
        self._partial = b""
        self._skipping = False
        self.usage: Usage | None = None

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
        if not isinstance(event, dict):
            return
        try:
            self.usage = parse_usage(event.get("usage"))
        except UsageError:
            return
