"""Miner configuration: development switches are refused outside the simulated TEE."""

from __future__ import annotations

import pytest

from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.inference import make_backend
from chutes_subnet.miner import MinerConfig, create_app


def test_dev_switches_are_refused_outside_the_simulated_tee(wallets) -> None:
    with pytest.raises(ValueError, match="tee"):
        MinerConfig(fault="stall")
    with pytest.raises(ValueError, match="tee"):
        MinerConfig(dangerous_plaintext_endpoint=True)

    class RealLookingProvider:
        def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str) -> Evidence:
            raise AssertionError("not called")

    for cfg in (MinerConfig(tee="simulated", fault="stall"),
                MinerConfig(tee="simulated", dangerous_plaintext_endpoint=True)):
        with pytest.raises(ValueError, match="simulated"):
            create_app(cfg, hotkey_ss58="5F", backend=make_backend("embedded"),
                       provider=RealLookingProvider(), gate=None)
