"""Live nonces per API key are capped (issue 17: 3,000 discovery calls left 120,000
live nonces in the store)."""

from __future__ import annotations

import httpx
import pytest

from chutes_subnet.e2ee import KeyPair
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.nonce_budget import NonceBudget
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from tests.gateway_fixtures import record_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_counts_issued_minus_consumed_until_expiry():
    clock = Clock()
    budget = NonceBudget(max_live=10, ttl=90, clock=clock)
    assert budget.reserve("k", 8) is None and budget.live("k") == 8
    assert budget.reserve("k", 8) == 90                 # would be 16 > 10: wait for expiry
    for _ in range(6):
        budget.consumed("k")
    assert budget.live("k") == 2 and budget.reserve("k", 8) is None
    assert budget.reserve("other", 10) is None          # per key
    clock.now += 91
    assert budget.live("k") == 0 and budget._batches.get("k") is None   # memory freed
    with pytest.raises(ValueError):
        NonceBudget(max_live=0, ttl=1)


async def test_discovery_beyond_the_budget_is_429_and_the_store_stays_bounded():
    registry = MemoryInstanceRegistry()
    registry.upsert(record_for(KeyPair.generate(), "http://127.0.0.1:9", chute_id="c" * 8,
                               model="m"))
    keys, nonces = MemoryApiKeyStore(), MemoryNonceStore()
    secret, _ = keys.create("k")
    app = create_app(GatewayConfig(nonces_per_instance=8, max_live_nonces_per_key=80),
                     registry=registry, nonce_store=nonces, keys=keys, usage=MemoryUsageMeter())
    auth = {"Authorization": f"Bearer {secret}"}
    statuses = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1") as client:
        for _ in range(30):
            resp = await client.get("/e2e/instances/" + "c" * 8, headers=auth)
            statuses.append(resp.status_code)
        assert resp.json()["reason"] == "nonce_budget"
        assert int(resp.headers["retry-after"]) >= 1
    assert statuses[:10] == [200] * 10 and set(statuses[10:]) == {429}
    assert len(nonces) == 80                            # not 30 x 8
