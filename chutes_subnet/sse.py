"""Server-sent events: an incremental, bounded parser and the event formatter.

Only what the E2EE streams need: ``data:`` fields (several in one event are joined
with ``\\n``), comments (``:``) and other fields ignored, events end at a blank line,
``\\n``/``\\r\\n``/``\\r`` line endings. A line or an event longer than ``max_line`` is refused, so a
peer cannot make the parser buffer without bound.
"""

from __future__ import annotations

import json
from typing import Any

from chutes_subnet.errors import EnvelopeFormatError

__all__ = ["SSEParser", "format_event", "DONE", "DONE_EVENT", "MAX_LINE"]

DONE = "[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"
MAX_LINE = 1024 * 1024


def format_event(data: dict[str, Any] | str) -> bytes:
    """One SSE event carrying ``data`` (a dict is JSON-encoded compactly)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return b"data: " + text.encode("utf-8") + b"\n\n"


class SSEParser:
    """Feed bytes, get back the ``data`` payload of each completed event."""

    __slots__ = ("_buf", "_data", "_max_line", "_pending_cr", "_event_size")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._max_line = max_line
        self._pending_cr = False
        self._event_size = 0

    @property
    def pending(self) -> bool:
        """True while bytes of an unfinished line or event are buffered."""
        return bool(self._buf) or bool(self._data)

    def feed(self, chunk: bytes) -> list[str]:
        """Consume ``chunk``; return the data of every event it completes."""
        if not (self._buf or self._data or self._pending_cr):
            whole = self._whole_events(chunk)
            if whole is not None:
                return whole
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = False
        buf = self._buf + chunk
        events: list[str] = []
        start = 0
        n = len(buf)
        while start < n:
            nl = buf.find(b"\n", start)
            cr = buf.find(b"\r", start)
            if nl == -1 and cr == -1:
                break
            if cr != -1 and (nl == -1 or cr < nl):
                end, nxt = cr, cr + 1
                if nxt < n and buf[nxt : nxt + 1] == b"\n":
                    nxt += 1
                elif nxt == n:
                    self._pending_cr = True
            else:
                end, nxt = nl, nl + 1
            self._line(buf[start:end], events)
            start = nxt
        self._buf = buf[start:]
        if len(self._buf) > self._max_line:
            raise EnvelopeFormatError("SSE line exceeds the size limit")
        return events

    def _whole_events(self, chunk: bytes) -> list[str] | None:
        """Fast path (one per streamed token): ``chunk`` is whole one-line ``data: ``
        events, as every sender here writes them. None: parse it line by line instead."""
        if not chunk.endswith(b"\n\n") or b"\r" in chunk:
            return None
        blocks = chunk[:-2].split(b"\n\n")
        limit = self._max_line
        for block in blocks:
            if not block.startswith(b"data: ") or b"\n" in block or len(block) > limit:
                return None
        try:
            return [block[6:].decode("utf-8") for block in blocks]
        except UnicodeDecodeError as exc:
            raise EnvelopeFormatError("SSE line is not UTF-8") from exc

    def close(self) -> list[str]:
        """End of input: a final event without its blank line still counts."""
        events: list[str] = []
        if self._buf:
            self._line(self._buf, events)
            self._buf = b""
        if self._data:
            events.append("\n".join(self._data))
            self._data = []
        return events

    def _line(self, raw: bytes, events: list[str]) -> None:
        if len(raw) > self._max_line:
            raise EnvelopeFormatError("SSE line exceeds the size limit")
        if not raw:
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
                self._event_size = 0
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeFormatError("SSE line is not UTF-8") from exc
        if line.startswith(":"):
            return
        field, sep, value = line.partition(":")
        if field != "data":
            return
        if sep and value.startswith(" "):
            value = value[1:]
        self._event_size += len(value)
        if self._event_size > self._max_line:
            raise EnvelopeFormatError("SSE event exceeds the size limit")
        self._data.append(value)
