"""What organic requests look like on the wire, for the validator's benchmark to copy.

The gateway sees, of every organic invoke, only what the miner's host sees too: the
sealed body size, the stream flag and the invoked path. :class:`RequestShapes` keeps a
bounded uniform sample of them (reservoir sampling, Li's Algorithm L: random draws
only for the requests that are kept, none on the hot path otherwise) so the validator can
draw benchmark requests from the same distribution: a miner's host then cannot tell
benchmark from organic traffic by size or path. Nothing else about a request is kept.
"""

from __future__ import annotations

import math
import os
import random
import threading
from dataclasses import dataclass

__all__ = ["RequestShape", "RequestShapes"]


@dataclass(frozen=True, slots=True)
class RequestShape:
    """One organic request as the network sees it."""

    request_bytes: int
    stream: bool
    path: str


class RequestShapes:
    """A uniform sample of at most ``capacity`` organic request shapes."""

    def __init__(self, capacity: int = 4096, rng: random.Random | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._items: list[RequestShape] = []
        self._seen = 0
        # Which requests are kept need not be secret (the sample is what the validator
        # gets); a seeded PRNG saves a getrandom() call per draw
        self._rng = rng or random.Random(os.urandom(32))  # noqa: S311 - not a secret
        self._lock = threading.Lock()
        #: Algorithm L: the running weight and the (1-based) count of the next kept request
        self._w = 1.0
        self._next = capacity

    def record(self, request_bytes: int, stream: bool, path: str) -> None:
        """Offer one organic request to the sample."""
        with self._lock:
            self._seen += 1
            if self._seen < self._next and len(self._items) == self._capacity:
                return  # most requests: skipped without a draw
            shape = RequestShape(int(request_bytes), bool(stream), str(path))
            if len(self._items) < self._capacity:
                self._items.append(shape)
            else:
                self._items[self._rng.randrange(self._capacity)] = shape
            if len(self._items) == self._capacity:
                self._schedule_next()

    def _schedule_next(self) -> None:
        """Draw how many requests to skip before the next one kept (geometric jump)."""
        rng = self._rng
        self._w *= math.exp(math.log(1.0 - rng.random()) / self._capacity)
        skip = math.floor(math.log(1.0 - rng.random()) / math.log1p(-self._w)) \
            if self._w < 1.0 else 0
        self._next = self._seen + skip + 1

    def snapshot(self) -> list[RequestShape]:
        """The current sample (a copy)."""
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)
