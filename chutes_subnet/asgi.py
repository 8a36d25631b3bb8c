"""Small raw-ASGI helpers shared by the hot-path endpoints of the miner and the gateway.

Both ``/e2e/invoke`` implementations are plain ASGI callables (no request objects, no
buffering of responses); they share the refusal type, the JSON error body, header
access and a bounded, time-limited body reader (slow or oversized bodies are refused,
so a slowloris client holds a slot for at most ``timeout`` seconds).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from chutes_subnet.errors import HeaderError
from chutes_subnet.httpserver import take_buffered_body
from chutes_subnet.wire.headers import InvokeHeaders

__all__ = [
    "invoke_headers",
    "Scope",
    "Receive",
    "Send",
    "Refusal",
    "error_body",
    "send_refusal",
    "read_body",
    "request_headers",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Refusal(Exception):
    """An HTTP refusal: status, a stable reason code, a message safe for any caller."""

    def __init__(self, status: int, reason: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = dict(headers or {})


def error_body(message: str, reason: str) -> bytes:
    """JSON bytes of :class:`chutes_subnet.wire.messages.ErrorBody`."""
    return json.dumps({"error": message, "reason": reason}, separators=(",", ":")).encode()


async def send_refusal(send: Send, exc: Refusal) -> None:
    """Answer ``exc`` as JSON with its status and headers."""
    body = error_body(exc.message, exc.reason)
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def request_headers(scope: Scope) -> dict[str, str]:
    """Header names (lower case, as ASGI delivers them) to values."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(receive: Receive, limit: int, timeout: float | None = None, *,
                    declared: str | None = None) -> bytes:
    """The whole request body: more than ``limit`` bytes is 413, slower than ``timeout`` is 408.

    ``declared`` (the Content-Length header) over the limit, or malformed, is refused
    before a single body byte is read.
    """
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refusal(413, "too_large", "request body too large")
    whole = take_buffered_body(receive)  # the server's fast path already holds all of it
    if whole is not None:
        if len(whole) > limit:
            raise Refusal(413, "too_large", "request body too large")
        return whole
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise Refusal(400, "client_gone", "client disconnected")
                part = msg.get("body", b"")
                size += len(part)
                if size > limit:
                    raise Refusal(413, "too_large", "request body too large")
                chunks.append(part)
                if not msg.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise Refusal(408, "body_timeout", "request body not received in time") from None


def invoke_headers(h: Mapping[str, str]) -> InvokeHeaders:
    """:meth:`InvokeHeaders.parse`, a bad header answered 400 with the parser's reason
    (``bad_header`` / ``bad_path`` / ``bad_version``)."""
    try:
        return InvokeHeaders.parse(h)
    except HeaderError as exc:
        raise Refusal(400, exc.reason, str(exc)) from None
