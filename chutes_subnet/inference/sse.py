"""Incremental parser for the ``text/event-stream`` bodies of OpenAI-compatible servers.

Bytes go in as they arrive; the ``data`` of each completed event comes out. Per the
SSE format an event ends at a blank line, several ``data:`` lines of one event are
joined with ``\\n``, one space after the colon is dropped, lines starting with ``:``
are comments and other fields (``event``, ``id``, ``retry``) are ignored. Lines end
in ``\\n``, ``\\r\\n`` or ``\\r``. Line and event
sizes are bounded so a hostile or broken peer cannot make the buffer grow forever.
"""

from __future__ import annotations

from chutes_subnet.errors import EnvelopeFormatError
from chutes_subnet.inference.base import UpstreamError
from chutes_subnet.sse import SSEParser

__all__ = ["SSEDecoder", "SSEFormatError", "DEFAULT_MAX_LINE_BYTES"]

DEFAULT_MAX_LINE_BYTES = 1024 * 1024


class SSEFormatError(UpstreamError):
    """The event stream is not valid SSE (over-long line, undecodable bytes)."""


class SSEDecoder:
    """Feed raw bytes with :meth:`feed`; receive completed event payloads.

    The project's one SSE parser (:class:`chutes_subnet.sse.SSEParser`) with its
    format errors reported as :class:`SSEFormatError` (an upstream failure here).
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._parser = SSEParser(max_line_bytes)

    def feed(self, chunk: bytes) -> list[str]:
        """Process ``chunk``; return the data of every event it completed, in order."""
        try:
            return self._parser.feed(chunk)
        except EnvelopeFormatError as exc:
            raise SSEFormatError(f"event-stream {exc}") from None

    @property
    def pending(self) -> bool:
        """True if bytes of an unfinished line or event are buffered."""
        return self._parser.pending
