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

__all__ = [
    "Scope",
    "Receive",
    "Send",
    "Refusal",
    "error_body",
    "send_refusal",
    "read_body",
    "request_headers",
    "required_header",
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
    """JSON bytes of :class:`chutes_subnet.protocol.ErrorBody`."""
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


def required_header(h: Mapping[str, str], name: str, max_len: int = 128) -> str:
    """A present, printable header of at most ``max_len`` characters, else 400 ``bad_header``."""
    value = h.get(name, "")
    if not value or len(value) > max_len or not value.isprintable():
        raise Refusal(400, "bad_header", f"missing or malformed {name} header")
    return value


async def read_body(receive: Receive, limit: int, timeout: float | None = None) -> bytes:
    """The whole request body: more than ``limit`` bytes is 413, slower than ``timeout`` is 408."""
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

