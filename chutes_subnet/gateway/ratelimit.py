"""Per-key request rate limiting (token buckets, one per API key, in process).

Each gateway replica limits independently, so with N replicas behind a load balancer a
key's effective ceiling is at most N times its configured rate; operators who need a
global ceiling divide the rate by the replica count. Time is injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimiter", "RateDecision"]


@dataclass(frozen=True)
class RateDecision:
    """Outcome of :meth:`RateLimiter.check`; ``retry_after`` is in seconds."""

    allowed: bool
    retry_after: float = 0.0


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """Token buckets keyed by ``key_id``: ``rate`` tokens/s up to ``burst``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._max_keys = max_keys

    def check(self, key_id: str, rate: float | None, burst: int | None = None) -> RateDecision:
        """Take one token for ``key_id``; ``rate=None`` means unlimited."""
        if rate is None:
            return RateDecision(True)
        cap = float(burst) if burst else max(1.0, 2.0 * rate)
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # bounded memory; resets are in the caller's favour
            bucket = self._buckets[key_id] = _Bucket(cap, now)
        bucket.tokens = min(cap, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return RateDecision(True)
        return RateDecision(False, retry_after=(1.0 - bucket.tokens) / rate)
