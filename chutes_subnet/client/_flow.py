"""The sans-I/O seam of the client: flows yield steps, two small loops drive them.

A flow is a generator that yields :class:`Step` (an HTTP request to send),
:class:`Work` (CPU-bound work, e.g. verifying a quote, run off the event loop by the
async driver) or :class:`Sleep` (a pause before a retry) and receives the response,
the work's result, or None. A ``Step`` marked
``soft`` gets transport failures (timeouts, refused connections) thrown into the
flow, which decides what they mean; otherwise they propagate to the caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from chutes_subnet.errors import PayloadTooLargeError
from chutes_subnet.wire.protocol import MAX_ENVELOPE_BYTES

__all__ = ["Flow", "Sleep", "Step", "Work", "drive_async", "drive_sync", "relay"]

T = TypeVar("T")


@dataclass
class Step:
    """Send ``request``; read the whole (bounded) body when ``read_body`` or not 200."""

    request: httpx.Request
    read_body: bool
    soft: bool = False
    limit: int = MAX_ENVELOPE_BYTES


@dataclass
class Work:
    """Run ``fn()`` and send its result back into the flow."""

    fn: Callable[[], Any]


@dataclass
class Sleep:
    """Pause ``seconds`` (bounded by the flow) before the flow continues."""

    seconds: float


Flow = Generator["Step | Work | Sleep", Any, T]


def relay(request: httpx.Request, limit: int,
          what: str) -> Flow[httpx.Response | tuple[str, str]]:
    """Send ``request`` through the gateway (a soft, bounded step): its response, or the
    ``(code, message)`` of a failed relay (``relay_timeout`` / ``relay_error``)."""
    try:
        response: httpx.Response = yield Step(request, True, soft=True, limit=limit)
    except httpx.TimeoutException:
        return "relay_timeout", f"{what} timed out"
    except (httpx.TransportError, PayloadTooLargeError):
        return "relay_error", f"{what} failed"
    return response


def _read_bounded_sync(resp: httpx.Response, limit: int) -> None:
    body = bytearray()
    for chunk in resp.stream:  # type: ignore[union-attr]
        body += chunk
        if len(body) > limit:
            resp.close()
            raise PayloadTooLargeError("gateway answer exceeds the size limit")
    resp.close()
    resp._content = bytes(body)


async def _read_bounded_async(resp: httpx.Response, limit: int) -> None:
    body = bytearray()
    async for chunk in resp.stream:  # type: ignore[union-attr]
        body += chunk
        if len(body) > limit:
            await resp.aclose()
            raise PayloadTooLargeError("gateway answer exceeds the size limit")
    await resp.aclose()
    resp._content = bytes(body)


def drive_sync(flow: Flow[T], inner: httpx.BaseTransport) -> T:
    """Run ``flow`` to completion with a sync transport."""
    try:
        item = next(flow)
        while True:
            if isinstance(item, Work):
                item = flow.send(item.fn())
                continue
            if isinstance(item, Sleep):
                time.sleep(item.seconds)
                item = flow.send(None)
                continue
            try:
                resp = inner.handle_request(item.request)
                if item.read_body or resp.status_code != 200:
                    _read_bounded_sync(resp, item.limit)
            except (httpx.TransportError, PayloadTooLargeError) as exc:
                if not item.soft:
                    raise
                item = flow.throw(exc)
                continue
            item = flow.send(resp)
    except StopIteration as done:
        return done.value


async def drive_async(flow: Flow[T], inner: httpx.AsyncBaseTransport) -> T:
    """Run ``flow`` to completion with an async transport (work in a thread)."""
    try:
        item = next(flow)
        while True:
            if isinstance(item, Work):
                item = flow.send(await asyncio.to_thread(item.fn))
                continue
            if isinstance(item, Sleep):
                await asyncio.sleep(item.seconds)
                item = flow.send(None)
                continue
            try:
                resp = await inner.handle_async_request(item.request)
                if item.read_body or resp.status_code != 200:
                    await _read_bounded_async(resp, item.limit)
            except (httpx.TransportError, PayloadTooLargeError) as exc:
                if not item.soft:
                    raise
                item = flow.throw(exc)
                continue
            item = flow.send(resp)
    except StopIteration as done:
        return done.value
