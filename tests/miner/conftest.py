"""Fixtures of the miner tests: wallets registered on a LocalChain, the btauth/1 gate, and one
real miner (uvicorn, embedded model, simulated TEE) shared by the package."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from chutes_subnet.auth import ValidatorGate
from chutes_subnet.chain import LocalChain
from chutes_subnet.miner import MinerConfig
from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58
from tests.miner_fixtures import MAX_BODY, Env, start_miner


@pytest.fixture(scope="package")
def wallets(tmp_path_factory) -> dict[str, Any]:
    root = str(tmp_path_factory.mktemp("wallets"))
    return {n: ensure_dev_wallet(n, "hot", root)
            for n in ("miner", "validator", "weak", "nopermit", "stranger")}


@pytest.fixture(scope="package")
def gate(wallets) -> ValidatorGate:
    chain = LocalChain(":memory:", netuid=7)
    for name, permit, stake in (("miner", False, 0.0), ("validator", True, 1000.0),
                                ("weak", True, 1.0), ("nopermit", False, 5000.0)):
        chain.register(hotkey_ss58(wallets[name]), coldkey_ss58(wallets[name]), stake=stake,
                       validator_permit=permit)
    snapshot = asyncio.run(chain.metagraph())
    return ValidatorGate(hotkey_ss58(wallets["miner"]), lambda: snapshot, min_stake=10.0)


@pytest.fixture(scope="package")
def env(wallets, gate) -> Iterator[Env]:
    cfg = MinerConfig(tee="simulated", max_body_bytes=MAX_BODY)
    server, inst = start_miner(cfg, wallets, gate)
    try:
        yield Env(server.url, inst, wallets, hotkey_ss58(wallets["miner"]))
    finally:
        server.stop()
