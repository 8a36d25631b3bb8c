"""The token-length attack (bench/traffic.py) before and after padding, as a test.

Runs the bench's own measurement on a short text: frame sizes of unpadded v2 (and v1)
give token lengths away; padded v2 leaves the attacker at chance, with one frame size.
No timing is asserted.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from chutes_subnet.e2ee import KeyPair

_SPEC = importlib.util.spec_from_file_location(
    "bench_traffic", Path(__file__).resolve().parents[2] / "bench" / "traffic.py")
traffic = importlib.util.module_from_spec(_SPEC)  # type: ignore[arg-type]
_SPEC.loader.exec_module(traffic)  # type: ignore[union-attr]

KP = KeyPair.generate()
TRAIN = traffic.tokenize(traffic.prose(1, 250))
TEST = traffic.tokenize(traffic.prose(2, 250))


@pytest.mark.parametrize("fmt", ["v1", "v2 unpadded"])
def test_before_padding_frame_sizes_give_token_lengths_away(fmt: str) -> None:
    r = traffic.attack(fmt, TRAIN, TEST, KP)
    assert r["correlation"] > 0.8
    assert r["accuracy"] > r["chance"] + 0.15
    assert r["distinct_frame_sizes"] > 1


@pytest.mark.parametrize("fmt", ["v2 padded", "v2 coalesced"])
def test_after_padding_the_attack_is_at_chance(fmt: str) -> None:
    r = traffic.attack(fmt, TRAIN, TEST, KP)
    assert r["distinct_frame_sizes"] == 1
    assert r["correlation"] == 0.0
    assert r["accuracy"] == pytest.approx(r["chance"])


def test_coalescing_uses_the_miners_policy_and_halves_the_bytes() -> None:
    coalesced = traffic.frames("v2 coalesced", TEST, KP)
    assert [len(ts) for _, ts in coalesced[:3]] == [1, 2, 2]      # first token alone
    assert [t for _, ts in coalesced for t in ts] == TEST          # every token, in order
    padded = traffic.attack("v2 padded", TRAIN, TEST, KP)
    merged = traffic.attack("v2 coalesced", TRAIN, TEST, KP)
    assert merged["frames"] <= padded["frames"] // 2 + 1
    assert merged["bytes_per_token"] < 0.55 * padded["bytes_per_token"]


def test_padme_leaves_few_envelope_sizes() -> None:
    sizes = traffic.envelope_sizes(600, KP)
    assert sizes["unpadded"] == 600 and sizes["padded"] <= 6  # 512..672 in 32-byte Padmé steps
