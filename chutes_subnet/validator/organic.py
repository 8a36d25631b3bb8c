"""Organic traffic from the in-process gateway as a scoring input.

The gateway counts the completion tokens each instance served to paying clients
(plaintext usage the miner reports; the gateway never sees content). Each round the
validator turns those counts into ``{uid: tokens}`` through the instances it has
itself published, so traffic to an instance it no longer trusts counts for nobody.
Counts are miner-reported numbers: anything that is not an integer in
``0..MAX_USAGE_TOKENS`` counts as 0 for that instance (never an error for the round).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from chutes_subnet.wire.headers import MAX_USAGE_TOKENS

__all__ = ["GatewayOrganicSource", "ServedCounter", "bounded_count"]


class ServedCounter(Protocol):
    def take_served(self) -> dict[str, int]: ...


class GatewayOrganicSource:
    """:class:`~chutes_subnet.validator.neuron.OrganicSource` fed by a gateway's counters."""

    def __init__(self, gateway: ServedCounter, published: Callable[[], Mapping[int, str]]) -> None:
        self._gateway = gateway
        self._published = published

    def served_tokens(self) -> dict[int, float]:
        served = self._gateway.take_served()
        return {uid: float(bounded_count(served.get(instance_id, 0)))
                for uid, instance_id in self._published().items()}


def bounded_count(value: object) -> int:
    """``value`` if it is an int in ``0..MAX_USAGE_TOKENS``, else 0."""
    return value if type(value) is int and 0 <= value <= MAX_USAGE_TOKENS else 0
