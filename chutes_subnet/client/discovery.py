"""Client-side discovery state: model -> chute id map, and per-chute nonce pools.

No I/O here: the transports fetch ``/v1/models`` and ``/e2e/instances/{chute_id}`` and
feed the parsed answers in. Pools expire a few seconds before the lifetime the gateway
announced (``nonce_expires_in``), hand nonces out round-robin across the offered
instances (the gateway already ranked them by score and load) and can drop an instance
that failed, so the next attempt goes elsewhere. All methods are thread-safe.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from chutes_subnet.errors import EnvelopeFormatError
from chutes_subnet.wire.call import SealTarget
from chutes_subnet.wire.messages import InstancesResponse, ModelCard

__all__ = [
    "DiscoveryCache",
    "NoncePool",
    "looks_like_chute_id",
    "parse_instances",
    "parse_models",
]

#: seconds shaved off the announced nonce lifetime (clock skew, request in flight)
EXPIRY_MARGIN = 5.0
MODEL_MAP_TTL = 300.0


def looks_like_chute_id(model: str) -> bool:
    """True for a canonical UUID string (such model names are chute ids already)."""
    if len(model) != 36:
        return False
    try:
        return str(uuid.UUID(model)) == model.lower()
    except ValueError:
        return False


def parse_models(body: Any) -> dict[str, str]:
    """``{model: chute_id}`` from a ``/v1/models`` JSON answer (bad entries skipped)."""
    data = body.get("data") if isinstance(body, dict) else None
    out: dict[str, str] = {}
    for entry in data if isinstance(data, list) else []:
        try:
            card = ModelCard.model_validate(entry)
        except ValidationError:
            continue
        out[card.id] = card.chute_id
    return out


def parse_instances(body: Any) -> tuple[list[tuple[SealTarget, list[str]]], float]:
    """Offers with their nonces, and ``nonce_expires_in``, from a discovery answer
    (:class:`~chutes_subnet.wire.messages.InstancesResponse`)."""
    try:
        answer = InstancesResponse.model_validate(body)
    except ValidationError:
        raise EnvelopeFormatError("malformed discovery answer") from None
    offers = [(SealTarget.from_discovery(entry), list(entry.nonces))
              for entry in answer.instances]
    return offers, float(answer.nonce_expires_in)


@dataclass
class NoncePool:
    """Nonces of one chute, per instance, valid until ``expires_at`` (monotonic)."""

    expires_at: float
    queues: dict[str, deque[str]] = field(default_factory=dict)
    offers: dict[str, SealTarget] = field(default_factory=dict)
    _turn: int = 0

    def take(self, now: float, avoid: set[str]) -> tuple[SealTarget, str] | None:
        """Next (instance, nonce), rotating across instances, skipping ``avoid``."""
        if now >= self.expires_at:
            return None
        ids = [i for i, q in self.queues.items() if q and i not in avoid]
        if not ids:
            return None
        iid = ids[self._turn % len(ids)]
        self._turn += 1
        return self.offers[iid], self.queues[iid].popleft()

    def drop_instance(self, instance_id: str) -> None:
        """Forget an instance's remaining nonces (it failed)."""
        self.queues.pop(instance_id, None)


class DiscoveryCache:
    """Model map and nonce pools shared by all requests of one transport."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[str, str] = {}
        self._models_at = float("-inf")
        self._pools: dict[str, NoncePool] = {}

    def chute_for(self, model: str) -> str | None:
        """Cached chute id of ``model`` (UUIDs map to themselves), or None."""
        if looks_like_chute_id(model):
            return model
        with self._lock:
            if self._clock() - self._models_at > MODEL_MAP_TTL:
                return None
            return self._models.get(model)

    def set_models(self, models: dict[str, str]) -> None:
        """Replace the model map with a fresh ``/v1/models`` answer."""
        with self._lock:
            self._models = dict(models)
            self._models_at = self._clock()

    def lookup_after_refresh(self, model: str) -> str | None:
        """Chute id of ``model`` from the map as it is now (after a refresh)."""
        with self._lock:
            return self._models.get(model)

    def take(self, chute_id: str, avoid: set[str]) -> tuple[SealTarget, str] | None:
        """A cached (instance, nonce) for the chute, or None when a refresh is needed."""
        with self._lock:
            pool = self._pools.get(chute_id)
            return pool.take(self._clock(), avoid) if pool is not None else None

    def refill(self, chute_id: str, offers: list[tuple[SealTarget, list[str]]],
               ttl: float) -> None:
        """Replace the chute's pool with a fresh discovery answer."""
        pool = NoncePool(expires_at=self._clock() + max(0.0, ttl - EXPIRY_MARGIN))
        for offer, nonces in offers:
            pool.offers[offer.instance_id] = offer
            pool.queues[offer.instance_id] = deque(nonces)
        with self._lock:
            self._pools[chute_id] = pool

    def invalidate(self, chute_id: str) -> None:
        """Drop the chute's pool (e.g. after the gateway refused a nonce)."""
        with self._lock:
            self._pools.pop(chute_id, None)

    def drop_instance(self, chute_id: str, instance_id: str) -> None:
        """Stop using an instance's cached nonces."""
        with self._lock:
            pool = self._pools.get(chute_id)
            if pool is not None:
                pool.drop_instance(instance_id)
