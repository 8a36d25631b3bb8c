"""Client-side memory of verification: pinned keys, recent failures, DCAP collateral.

:class:`PinStore` maps ``instance_id -> (key, verdict)`` for a bounded time: a pin is
used only while it is fresh *and* the gateway still lists the same key (a new key
means a new verification). Failures are remembered for a shorter time so a failing
instance is skipped without being challenged on every request. :class:`CollateralCache`
keeps Intel collateral per platform (``FMSPC-CA``) inside its own validity window;
it is the :class:`~chutes_subnet.attestation.verify.collateral.CollateralSource` the client's verifier
reads (memory only, no I/O). Both are bounded and thread-safe; clocks are injectable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chutes_subnet.attestation.verify.binding import constant_time_equal
from chutes_subnet.attestation.verify.collateral import collateral_key, collateral_window
from chutes_subnet.attestation.verify.dcap import collateral_from_json
from chutes_subnet.attestation.verify.reasons import Reason
from chutes_subnet.errors import CollateralError, InstanceVerificationError

from .verify import ClientVerdict

__all__ = ["CollateralCache", "Pin", "PinStore", "pinned_verdict", "refused", "remember"]


@dataclass(frozen=True)
class Pin:
    """A verification outcome for one instance key, valid until ``expires_at``."""

    e2e_pubkey: bytes
    verdict: ClientVerdict
    expires_at: float


class PinStore:
    """Verified pins and remembered failures, LRU-bounded (``max_entries`` each)."""

    def __init__(self, *, pin_ttl: float, failure_ttl: float, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if pin_ttl <= 0 or failure_ttl <= 0 or max_entries <= 0:
            raise ValueError("pin_ttl, failure_ttl and max_entries must be positive")
        self.pin_ttl, self.failure_ttl, self._max = pin_ttl, failure_ttl, max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._pins: OrderedDict[str, Pin] = OrderedDict()
        self._failures: OrderedDict[str, Pin] = OrderedDict()

    def _fresh(self, table: OrderedDict[str, Pin], instance_id: str, pubkey: bytes) -> Pin | None:
        pin = table.get(instance_id)
        if pin is None:
            return None
        if self._clock() >= pin.expires_at or not constant_time_equal(pin.e2e_pubkey, pubkey):
            del table[instance_id]
            return None
        table.move_to_end(instance_id)
        return pin

    def verified(self, instance_id: str, pubkey: bytes) -> ClientVerdict | None:
        """The fresh passing verdict pinned for exactly this key, or None."""
        with self._lock:
            pin = self._fresh(self._pins, instance_id, pubkey)
            return pin.verdict if pin else None

    def failed(self, instance_id: str, pubkey: bytes) -> ClientVerdict | None:
        """A recent failing verdict for this key (skip the instance), or None."""
        with self._lock:
            pin = self._fresh(self._failures, instance_id, pubkey)
            return pin.verdict if pin else None

    def record(self, pubkey: bytes, verdict: ClientVerdict) -> None:
        """Remember a verdict for the key the gateway listed."""
        table, ttl = (self._pins, self.pin_ttl) if verdict.ok else (self._failures, self.failure_ttl)
        other = self._failures if verdict.ok else self._pins
        with self._lock:
            other.pop(verdict.instance_id, None)
            table[verdict.instance_id] = Pin(bytes(pubkey), verdict, self._clock() + ttl)
            table.move_to_end(verdict.instance_id)
            while len(table) > self._max:
                table.popitem(last=False)

    def forget(self, instance_id: str) -> None:
        """Drop any pin or failure of ``instance_id``."""
        with self._lock:
            self._pins.pop(instance_id, None)
            self._failures.pop(instance_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pins)


class CollateralCache:
    """DCAP collateral per platform, served only inside its validity window."""

    def __init__(self, max_entries: int = 64) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Any, int, int]] = OrderedDict()

    def has(self, quote: bytes, now: int) -> bool:
        """True when collateral valid at ``now`` is cached for ``quote``'s platform."""
        try:
            self.get(quote, now)
        except CollateralError:
            return False
        return True

    def get(self, quote: bytes, now: int) -> Any:
        """Cached collateral for ``quote`` valid at ``now``; raises ``CollateralError``."""
        key = collateral_key(quote)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or not entry[1] <= now < entry[2]:
            raise CollateralError("no valid collateral for this platform (FMSPC/CA)")
        return entry[0]

    def put(self, quote: bytes, text: str | bytes, now: int) -> None:
        """Store collateral fetched for ``quote``; raises ``CollateralError`` when it is
        unreadable or not valid at ``now``. (Its signatures are checked by DCAP.)"""
        collateral = collateral_from_json(text)
        start, end = collateral_window(collateral)
        if not start <= now < end:
            raise CollateralError("collateral is not valid at the verification time")
        key = collateral_key(quote)
        with self._lock:
            self._entries[key] = (collateral, start, end)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


def refused(instance_id: str, code: str, message: str) -> ClientVerdict:
    """A failed verdict with one reason."""
    return ClientVerdict(instance_id, (Reason(code, message),))


def remember(pins: PinStore, rejected: deque[InstanceVerificationError], log: logging.Logger,
             listed: bytes, verdict: ClientVerdict) -> ClientVerdict:
    """Pin a fresh ``verdict`` for the ``listed`` key (when there is one); a refusal is
    also kept in ``rejected`` (bounded) and logged. Returns ``verdict``."""
    if listed:
        pins.record(listed, verdict)
    if not verdict.ok:
        err = verdict.error()
        rejected.append(err)
        log.warning("refused %s", err)
    return verdict


def pinned_verdict(pins: PinStore, instance_id: str, key: bytes,
                   chute_id: str | None) -> ClientVerdict | None:
    """The pinned verdict for (instance, key), if any, refused when a pinned instance
    serves another chute than the one asked for; None: verify afresh."""
    pinned = pins.verified(instance_id, key) or pins.failed(instance_id, key)
    if pinned is not None and pinned.ok and chute_id is not None \
            and pinned.chute_id != chute_id:
        return refused(instance_id, "chute_mismatch",
                       "the instance does not serve the requested model")
    return pinned
