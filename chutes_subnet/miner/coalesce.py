"""Token coalescing for streamed answers: several tokens in one encrypted frame.

Policy (DESIGN B6; on by default for padded v2 streams, ``--stream.coalesce_ms``):

1. Items pass one per batch, at once, up to and including the first for which
   ``eager_until(item)`` is true (the first chunk carrying text): time to first token
   is never delayed, whatever text-less chunks (a role-only delta) come first.
2. After that a batch opens with the next item and closes ``window`` seconds later,
   or as soon as the next item would not fit (the costs of its items would exceed
   ``capacity``: one padded bucket), or when the source ends. A batch always takes
   its first item, whatever its cost.

Every padded frame is one bucket, so frame sizes say nothing about tokens with or
without coalescing; coalescing cuts the bytes and the per-frame work (one AEAD call,
one base64, one ASGI send for two or three tokens) and blurs token timing. What an
observer can still see is when a frame goes out: at its window's end, or early when
the next token did not fit, which depends on the lengths of the tokens in it only
where their sum falls near the bucket's edge (docs/protocol.md, "Stream padding").

The source is read by a pump task, so a batch whose window closed goes out while the
next token is still being generated; the pump stops reading once ``max_buffered``
items wait (backpressure from a slow reader reaches the model as before). Errors of
the source are raised after the items read before them. Use as
``async with contextlib.aclosing(coalesce(...)) as batches``: closing stops the pump
before the source may be closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TypeVar

__all__ = ["DEFAULT_WINDOW_S", "coalesce"]

T = TypeVar("T")

#: default window: below what a reader notices, above a fast model's token interval
DEFAULT_WINDOW_S = 0.020


async def coalesce(source: AsyncIterator[T], *, window: float, capacity: int,
                   cost: Callable[[T], int], eager_until: Callable[[T], bool],
                   max_buffered: int = 256) -> AsyncGenerator[list[T], None]:
    """Batches of ``source``'s items, in order (see the module doc for the policy)."""
    it = aiter(source)
    async for item in it:  # 1. one per batch until the first text is out
        yield [item]
        if eager_until(item):
            break
    else:
        return
    if window <= 0:
        async for item in it:
            yield [item]
        return
    loop = asyncio.get_running_loop()
    buf: deque[T] = deque()
    room = asyncio.Event()
    room.set()
    ended = False
    failure: BaseException | None = None
    wake: asyncio.Future[None] | None = None

    def notify() -> None:
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def pump() -> None:
        nonlocal ended, failure
        try:
            async for got in it:
                buf.append(got)
                notify()
                if len(buf) >= max_buffered:
                    room.clear()
                    await room.wait()
        except BaseException as exc:  # handed to the consumer, in order: a source that
            failure = exc             # dies (even cancelled) never reads as a complete stream
            if not isinstance(exc, Exception):
                raise
        finally:
            ended = True
            notify()

    async def wait(timeout: float | None) -> None:
        nonlocal wake
        wake = loop.create_future()
        timer = loop.call_later(timeout, notify) if timeout is not None else None
        try:
            await wake
        finally:
            wake = None
            if timer is not None:
                timer.cancel()

    task = loop.create_task(pump())
    try:
        while True:  # 2. windowed batches
            if not buf:
                if ended:
                    break
                await wait(None)
                continue
            first = buf.popleft()
            batch, used = [first], cost(first)
            deadline = loop.time() + window
            while True:
                while buf and used + cost(buf[0]) <= capacity:
                    nxt = buf.popleft()
                    batch.append(nxt)
                    used += cost(nxt)
                if buf or ended:
                    break  # the next item does not fit, or nothing more comes
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await wait(remaining)
            if len(buf) < max_buffered:
                room.set()
            yield batch
        if failure is not None:
            raise failure
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
