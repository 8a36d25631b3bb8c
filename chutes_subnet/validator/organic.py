"""Organic traffic from the in-process gateway as a scoring input.

The gateway counts the completion tokens each instance served to paying clients
(plaintext usage the miner reports; the gateway never sees content). Each round the
validator turns those counts into ``{uid: tokens}`` through the instances it has
itself published, so traffic to an instance it no longer trusts counts for nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

__all__ = ["GatewayOrganicSource", "ServedCounter"]


class ServedCounter(Protocol):
    def take_served(self) -> dict[str, int]: ...


class GatewayOrganicSource:
    """:class:`~chutes_subnet.validator.neuron.OrganicSource` fed by a gateway's counters."""

    def __init__(self, gateway: ServedCounter, published: Callable[[], Mapping[int, str]]) -> None:
        self._gateway = gateway
        self._published = published

    def served_tokens(self) -> dict[int, float]:
        served = self._gateway.take_served()
        return {uid: float(served.get(instance_id, 0))
                for uid, instance_id in self._published().items()}
