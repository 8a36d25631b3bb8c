"""Incremental parser for the ``text/event-stream`` bodies of OpenAI-compatible servers.

Bytes go in as they arrive; the ``data`` of each completed event comes out. Per the
SSE format an event ends at a blank line, several ``data:`` lines of one event are
joined with ``\\n``, one space after the colon is dropped, lines starting with ``:``
are comments and other fields (``event``, ``id``, ``retry``) are ignored. Lines end
in ``\\n`` or ``\\r\\n`` (a bare ``\\r`` terminator is not supported). Line and event
sizes are bounded so a hostile or broken peer cannot make the buffer grow forever.
"""

from __future__ import annotations

from chutes_subnet.inference.base import UpstreamError

__all__ = ["SSEDecoder", "SSEFormatError", "DEFAULT_MAX_LINE_BYTES"]

DEFAULT_MAX_LINE_BYTES = 1024 * 1024


class SSEFormatError(UpstreamError):
    """The event stream is not valid SSE (over-long line, undecodable bytes)."""


class SSEDecoder:
    """Feed raw bytes with :meth:`feed`; receive completed event payloads."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._max_line = max_line_bytes
        self._buffer = bytearray()
        self._data: list[str] = []
        self._event_bytes = 0

    def feed(self, chunk: bytes) -> list[str]:
        """Process ``chunk``; return the data of every event it completed, in order."""
        self._buffer += chunk
        events: list[str] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line:
                    raise SSEFormatError("event-stream line exceeds the size limit")
                return events
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > self._max_line:
                raise SSEFormatError("event-stream line exceeds the size limit")
            event = self._line(raw)
            if event is not None:
                events.append(event)

    @property
    def pending(self) -> bool:
        """True if bytes of an unfinished line or event are buffered."""
        return bool(self._buffer) or bool(self._data)

    def _line(self, raw: bytes) -> str | None:
        if not raw:
            if not self._data:
                return None
            event = "\n".join(self._data)
            self._data, self._event_bytes = [], 0
            return event
        if raw.startswith(b":"):
            return None
        name, sep, value = raw.partition(b":")
        if name != b"data":
            return None
        if sep and value.startswith(b" "):
            value = value[1:]
        self._event_bytes += len(value)
        if self._event_bytes > self._max_line:
            raise SSEFormatError("event-stream event exceeds the size limit")
        try:
            self._data.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise SSEFormatError("event-stream data is not UTF-8") from None
        return None
