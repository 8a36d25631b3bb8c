"""Per-key cap on live (issued, not yet consumed or expired) nonces.

Discovery hands every caller ``nonces_per_instance * max_instances`` fresh nonces, each
kept by the nonce store for ``nonce_ttl_server`` seconds. Without a cap one API key
calling discovery in a loop fills the store (3,000 calls = 120,000 live nonces). The
budget counts, per key and per replica, the nonces issued in batches that have not
expired, minus those consumed by an invoke; discovery is refused with 429
``nonce_budget`` (``Retry-After`` = seconds until the oldest batch expires) when a new
batch would exceed ``max_live``. Memory is bounded by the keys that hold live nonces.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["NonceBudget"]


class NonceBudget:
    """Live-nonce accounting per key (not thread-safe; one event loop per replica)."""

    def __init__(self, max_live: int, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_live < 1 or ttl <= 0:
            raise ValueError("max_live >= 1 and ttl > 0 required")
        self.max_live, self.ttl, self._clock = int(max_live), float(ttl), clock
        # key -> batches [expiry, remaining], oldest first
        self._batches: dict[str, deque[list[float]]] = {}

    def _expire(self, key: str, now: float) -> deque[list[float]]:
        batches = self._batches.get(key)
        if batches is None:
            return deque()
        while batches and (batches[0][0] <= now or batches[0][1] <= 0):
            batches.popleft()
        if not batches:
            del self._batches[key]
        return batches

    def live(self, key: str) -> int:
        """Nonces issued to ``key`` that are neither consumed nor expired."""
        return int(sum(b[1] for b in self._expire(key, self._clock())))

    def reserve(self, key: str, count: int) -> float | None:
        """Record ``count`` new nonces for ``key``; None if admitted, else the seconds
        until enough of them expire (the caller answers 429)."""
        now = self._clock()
        batches = self._expire(key, now)
        live = sum(b[1] for b in batches)
        if live + count > self.max_live:
            return max(1.0, math.ceil(batches[0][0] - now)) if batches else self.ttl
        self._batches.setdefault(key, batches).append([now + self.ttl, float(count)])
        return None

    def consumed(self, key: str) -> None:
        """One of ``key``'s nonces was used (frees budget at once)."""
        batches = self._expire(key, self._clock())
        for batch in batches:
            if batch[1] > 0:
                batch[1] -= 1
                break
