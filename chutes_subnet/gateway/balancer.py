"""Choosing which attested instances a client is offered, by score and current load.

With E2EE the gateway cannot move a request between instances: the client encrypts to
one instance's public key and the nonce is bound to that instance. Balancing therefore
happens at discovery time — :meth:`LoadBalancer.rank` orders the live instances by a
weighted random draw (weight = (score + floor) / (1 + in-flight requests)), so better
and idler instances come first and get most traffic while others still get some — and
after a failure: an instance that failed before sending a byte is benched for
``cooldown`` seconds, the gateway answers 502 with ``X-E2E-Retry: instance``, and the
client transport retries on the next instance with a fresh envelope and nonce.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from chutes_subnet.registry import InstanceRecord

__all__ = ["LoadBalancer"]


class LoadBalancer:
    """In-flight counters, failure bench, and weighted ordering of instances."""

    def __init__(self, *, cooldown: float = 10.0, score_floor: float = 0.05,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self._inflight: dict[str, int] = {}
        self._benched_until: dict[str, float] = {}
        self._cooldown = cooldown
        self._floor = score_floor
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not a secret

    def inflight(self, instance_id: str) -> int:
        """Requests currently being forwarded to the instance by this replica."""
        return self._inflight.get(instance_id, 0)

    def acquire(self, instance_id: str) -> None:
        """Count a request as in flight."""
        self._inflight[instance_id] = self._inflight.get(instance_id, 0) + 1

    def release(self, instance_id: str) -> None:
        """Count a request as finished."""
        n = self._inflight.get(instance_id, 0) - 1
        if n > 0:
            self._inflight[instance_id] = n
        else:
            self._inflight.pop(instance_id, None)

    def mark_failed(self, instance_id: str) -> None:
        """Bench an instance that failed before answering."""
        self._benched_until[instance_id] = self._clock() + self._cooldown

    def is_benched(self, instance_id: str) -> bool:
        """True during the cooldown after a failure."""
        until = self._benched_until.get(instance_id)
        if until is None:
            return False
        if self._clock() >= until:
            del self._benched_until[instance_id]
            return False
        return True

    def weight(self, rec: InstanceRecord) -> float:
        """Selection weight: higher score and fewer in-flight requests rank higher."""
        return (max(rec.score, 0.0) + self._floor) / (1.0 + self.inflight(rec.instance_id))

    def rank(self, records: Sequence[InstanceRecord], limit: int) -> list[InstanceRecord]:
        """Up to ``limit`` instances in weighted random order (Efraimidis-Spirakis).

        Benched instances are left out unless nothing else is available.
        """
        healthy = [r for r in records if not self.is_benched(r.instance_id)]
        pool = healthy or list(records)
        keyed = [(self._rng.random() ** (1.0 / self.weight(r)), r) for r in pool]
        keyed.sort(key=lambda kv: kv[0], reverse=True)
        return [r for _, r in keyed[:limit]]
