"""Demand-driven scaling: measure demand per chute, turn it into targets, reward supply.

1. :class:`DemandMeter` (gateway): per chute, over a sliding window (default 300 s in
   10 s buckets): requests routed, tokens served, refusals for lack of capacity, and
   the time-averaged number of requests in flight (busy slot-seconds / window).
2. :func:`plan_targets` (validator, pure): instances wanted per chute::

       wanted = ceil(inflight_avg / (capacity_per_instance * TARGET_UTILIZATION))
       wanted = max(wanted, current + 1)        if any request was refused for capacity
       target = clamp(wanted, min_instances, max_instances)

   ``TARGET_UTILIZATION = 0.6``: an instance is "full enough" at 60 % of its slots,
   which leaves head-room for bursts (a batch-1 engine's queueing delay grows sharply
   past ~70 % utilisation).
3. :func:`supply_multiplier` (validator, pure): a miner's round score is multiplied by
   ``clamp(1 + 0.5 * (1 - current / target), 0.5, 1.5)`` for the chute it serves:
   1.5 for the first instance of an unserved chute, 1.0 at target, down to 0.5 at
   twice the target or more (and 0.5 for a chute with target 0 that is still served).

Worked example (capacity 4 slots per instance): chute A averages 6 requests in flight
with 2 instances, chute B averages 0.5 with 3 instances. A wants ceil(6 / 2.4) = 3
instances (current 2: multiplier 1 + 0.5 * (1 - 2/3) = 1.17); B wants ceil(0.5 / 2.4)
= 1 (min 1; current 3: multiplier max(0.5, 1 + 0.5 * (1 - 3)) = 0.5). A miner moving
one instance from B to A lifts its multiplier from 0.5 to 1.0 (A at target); B's
remaining miners stay at 0.5 until B is down to its one wanted instance (1.0).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "BUCKET_SECONDS",
    "DEFAULT_WINDOW_SECONDS",
    "MAX_MULTIPLIER",
    "MIN_MULTIPLIER",
    "TARGET_UTILIZATION",
    "ChuteDemand",
    "DemandMeter",
    "Target",
    "plan_targets",
    "supply_multiplier",
]

DEFAULT_WINDOW_SECONDS = 300.0
BUCKET_SECONDS = 10.0
TARGET_UTILIZATION = 0.6
MIN_MULTIPLIER, MAX_MULTIPLIER = 0.5, 1.5


@dataclass(frozen=True)
class ChuteDemand:
    """What one chute was asked for over the window."""

    requests: int = 0
    tokens: int = 0
    refusals: int = 0  #: refused for lack of capacity (no live instance, all busy)
    inflight_avg: float = 0.0  #: time-averaged requests in flight

    def to_dict(self) -> dict[str, float | int]:
        return {"requests": self.requests, "tokens": self.tokens, "refusals": self.refusals,
                "inflight_avg": round(self.inflight_avg, 4)}


class _Bucket:
    __slots__ = ("busy", "refusals", "requests", "start", "tokens")

    def __init__(self, start: float) -> None:
        self.start, self.requests, self.tokens, self.refusals, self.busy = start, 0, 0, 0, 0.0


class _Series:
    __slots__ = ("buckets", "changed", "inflight")

    def __init__(self, now: float) -> None:
        self.buckets: deque[_Bucket] = deque()
        self.inflight = 0
        self.changed = now


class DemandMeter:
    """Per-chute demand of one gateway replica (in memory, thread-safe)."""

    def __init__(self, window: float = DEFAULT_WINDOW_SECONDS, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if window < BUCKET_SECONDS:
            raise ValueError(f"window must be >= {BUCKET_SECONDS} s")
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}

    def started(self, chute_id: str) -> None:
        """A request for ``chute_id`` was routed to an instance."""
        with self._lock:
            s, b = self._advance(chute_id)
            b.requests += 1
            s.inflight += 1

    def finished(self, chute_id: str, tokens: int = 0) -> None:
        """A routed request ended (``tokens`` served, as metered)."""
        with self._lock:
            s, b = self._advance(chute_id)
            b.tokens += max(0, int(tokens))
            s.inflight = max(0, s.inflight - 1)

    def refused(self, chute_id: str) -> None:
        """A request for ``chute_id`` found no capacity (no live instance, all busy)."""
        with self._lock:
            self._advance(chute_id)[1].refusals += 1

    def snapshot(self) -> dict[str, ChuteDemand]:
        """Demand per chute over the window ending now."""
        out = {}
        with self._lock:
            for chute_id in list(self._series):
                s, _ = self._advance(chute_id)
                span = min(self.window, max(BUCKET_SECONDS, self._clock() - s.buckets[0].start))
                out[chute_id] = ChuteDemand(
                    sum(b.requests for b in s.buckets), sum(b.tokens for b in s.buckets),
                    sum(b.refusals for b in s.buckets),
                    sum(b.busy for b in s.buckets) / span)
        return out

    def _advance(self, chute_id: str) -> tuple[_Series, _Bucket]:
        """Account in-flight time up to now and return the current bucket."""
        now = self._clock()
        s = self._series.get(chute_id)
        if s is None:
            s = self._series[chute_id] = _Series(now)
        start = math.floor(now / BUCKET_SECONDS) * BUCKET_SECONDS
        if not s.buckets or s.buckets[-1].start != start:
            s.buckets.append(_Bucket(start))
        s.buckets[-1].busy += s.inflight * (now - s.changed)
        s.changed = now
        while s.buckets and s.buckets[0].start <= now - self.window - BUCKET_SECONDS:
            s.buckets.popleft()
        return s, s.buckets[-1]


@dataclass(frozen=True)
class Target:
    """Instances wanted for one chute, and how many serve it now."""

    target: int
    current: int
    multiplier: float

    def to_dict(self) -> dict[str, float | int]:
        return {"target": self.target, "current": self.current,
                "multiplier": round(self.multiplier, 4)}


def supply_multiplier(current: int, target: int) -> float:
    """Score multiplier for serving a chute with ``current`` instances of ``target``."""
    if target <= 0:
        return 1.0 if current <= 0 else MIN_MULTIPLIER
    m = 1.0 + 0.5 * (1.0 - current / target)
    return min(MAX_MULTIPLIER, max(MIN_MULTIPLIER, m))


def plan_targets(demand: Mapping[str, ChuteDemand],
                 chutes: Iterable[tuple[str, int, int]],
                 current: Mapping[str, int], *,
                 capacity_per_instance: int) -> dict[str, Target]:
    """Targets for ``chutes`` = ``(chute_id, min_instances, max_instances)`` (see module doc)."""
    if capacity_per_instance < 1:
        raise ValueError("capacity_per_instance must be >= 1")
    out = {}
    for chute_id, low, high in chutes:
        d = demand.get(chute_id, ChuteDemand())
        have = current.get(chute_id, 0)
        wanted = math.ceil(d.inflight_avg / (capacity_per_instance * TARGET_UTILIZATION) - 1e-9)
        if d.refusals:
            wanted = max(wanted, have + 1)
        target = min(high, max(low, wanted))
        out[chute_id] = Target(target, have, supply_multiplier(have, target))
    return out
