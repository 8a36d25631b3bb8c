"""Per-instance admission: a non-blocking concurrency limit that can be drained."""

from __future__ import annotations

import asyncio

__all__ = ["ConcurrencyLimiter"]


class ConcurrencyLimiter:
    """At most ``capacity`` holders at once; ``try_acquire`` never waits.

    A full instance answers 429 at once instead of queueing: the gateway can then
    pick another instance, which beats waiting behind a batch-1 model.
    Single event loop only (no locks needed).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._held = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._held

    def try_acquire(self) -> bool:
        """Take a slot if one is free."""
        if self._held >= self.capacity:
            return False
        self._held += 1
        self._idle.clear()
        return True

    def release(self) -> None:
        """Give a slot back (exactly once per successful ``try_acquire``)."""
        if self._held <= 0:
            raise RuntimeError("release without acquire")
        self._held -= 1
        if self._held == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no slot is held; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
