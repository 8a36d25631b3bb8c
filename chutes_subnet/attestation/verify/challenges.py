"""In-memory single-use attestation challenge nonces (validator side).

``issue()`` hands out a fresh 32-byte nonce; ``consume()`` accepts it exactly once and
only before it expires (an issued :class:`~chutes_subnet.single_use.SingleUse` store). Thread-safe; the clock is injectable for tests. For state
shared across validator replicas use :mod:`chutes_subnet.nonces` instead.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from chutes_subnet.single_use import Use
from chutes_subnet.wire.protocol import ATTEST_NONCE_BYTES

__all__ = ["ChallengeBook"]


class ChallengeBook:
    """Outstanding challenge nonces with a TTL; each is consumable once."""

    def __init__(
        self,
        ttl: float = 60.0,
        *,
        max_outstanding: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_outstanding <= 0:
            raise ValueError("ttl and max_outstanding must be positive")
        self._ttl, self._max, self._clock = ttl, max_outstanding, clock
        self._expiry: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def _purge(self, now: float) -> None:
        while self._expiry:
            nonce, expiry = next(iter(self._expiry.items()))
            if expiry > now and len(self._expiry) < self._max:
                break
            del self._expiry[nonce]

    def issue(self) -> bytes:
        """A fresh random nonce, valid for ``ttl`` seconds (oldest evicted when full)."""
        nonce = os.urandom(ATTEST_NONCE_BYTES)
        with self._lock:
            now = self._clock()
            self._purge(now)
            self._expiry[nonce] = now + self._ttl
        return nonce

    def consume(self, token: bytes) -> Use:
        """ACCEPTED exactly once for an issued, unexpired nonce; UNKNOWN or EXPIRED otherwise."""
        if not isinstance(token, (bytes, bytearray)) or len(token) != ATTEST_NONCE_BYTES:
            return Use.UNKNOWN
        with self._lock:
            expiry = self._expiry.pop(bytes(token), None)
            if expiry is None:
                return Use.UNKNOWN
            return Use.ACCEPTED if self._clock() < expiry else Use.EXPIRED
