"""Organic gateway traffic as a scoring input: counted per published instance only."""

from __future__ import annotations

from chutes_subnet.validator.organic import GatewayOrganicSource


class Counter:
    def __init__(self, served: dict[str, int]) -> None:
        self.served = served

    def take_served(self) -> dict[str, int]:
        out, self.served = self.served, {}
        return out


def test_traffic_maps_to_uids_through_published_instances_only():
    gw = Counter({"inst-1": 120, "inst-2": 30, "unpublished": 999})
    source = GatewayOrganicSource(gw, lambda: {1: "inst-1", 2: "inst-2", 3: "inst-3"})
    assert source.served_tokens() == {1: 120.0, 2: 30.0, 3: 0.0}
    assert source.served_tokens() == {1: 0.0, 2: 0.0, 3: 0.0}  # counters are drained
