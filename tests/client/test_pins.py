"""Verification pins: expire, follow the key, stay bounded."""

from __future__ import annotations

from chutes_subnet.attestation.verify.reasons import Reason
from chutes_subnet.client.pins import PinStore
from chutes_subnet.client.verify import ClientVerdict


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_pins_expire_follow_the_key_and_stay_bounded() -> None:
    clock = Clock()
    pins = PinStore(pin_ttl=10, failure_ttl=2, max_entries=2, clock=clock)
    good = ClientVerdict("a", ())
    bad = ClientVerdict("b", (Reason("x", "y"),))
    pins.record(b"k1", good)
    pins.record(b"k2", bad)
    assert pins.verified("a", b"k1") is good and pins.failed("b", b"k2") is bad
    assert pins.verified("a", b"other-key") is None  # a new key is never trusted on a pin
    assert pins.verified("a", b"k1") is None  # ...and the old pin was dropped
    pins.record(b"k1", good)
    clock.t = 3
    assert pins.failed("b", b"k2") is None and pins.verified("a", b"k1") is good
    clock.t = 11
    assert pins.verified("a", b"k1") is None
    for i in range(5):
        pins.record(b"k", ClientVerdict(f"i{i}", ()))
    assert len(pins) == 2
