"""The gateway's collateral cache for clients: per platform, until the earliest
nextUpdate (at most max_age), one fetch for concurrent askers, fail closed."""

from __future__ import annotations

import asyncio
import json

import pytest

from chutes_subnet.errors import CollateralError
from chutes_subnet.gateway.collateral_cache import (
    PcsCollateralCache,
    StaticCollateral,
    platform_key,
)
from tests.client_fixtures import VECTOR_NOW, vector_collateral_text, vector_quote

TEXT = vector_collateral_text()


def test_platform_key_of_the_real_quote_and_garbage() -> None:
    assert platform_key(vector_quote()) == "B0C06F000000-platform"
    with pytest.raises(CollateralError):
        platform_key(b"not a quote")


def test_cache_fetches_once_per_platform_and_refetches_after_expiry() -> None:
    calls: list[str] = []

    async def fetch(url: str, quote: bytes) -> str:
        calls.append(url)
        await asyncio.sleep(0.01)
        return TEXT

    cache = PcsCollateralCache("https://pccs.example/", fetch=fetch, max_age=3600)

    async def run() -> None:
        got = await asyncio.gather(*(cache.get_json(vector_quote(), VECTOR_NOW) for _ in range(5)))
        assert got == [TEXT] * 5 and calls == ["https://pccs.example"]
        await cache.get_json(vector_quote(), VECTOR_NOW + 3599)
        assert len(calls) == 1
        await cache.get_json(vector_quote(), VECTOR_NOW + 3600)  # max_age passed
        assert len(calls) == 2

    asyncio.run(run())


def test_expired_timeouts_and_malformed_collateral_fail_closed() -> None:
    async def expired(_u: str, _q: bytes) -> str:
        return TEXT

    async def slow(_u: str, _q: bytes) -> str:
        await asyncio.sleep(5)
        return TEXT

    async def broken(_u: str, _q: bytes) -> str:
        return json.dumps({"tcb_info": "{}"})

    for fetch, now in ((expired, 2_000_000_000), (slow, VECTOR_NOW), (broken, VECTOR_NOW)):
        cache = PcsCollateralCache("https://pccs.example", fetch=fetch, timeout=0.05)
        with pytest.raises(CollateralError):
            asyncio.run(cache.get_json(vector_quote(), now))
    with pytest.raises(CollateralError):
        StaticCollateral("{}")
    with pytest.raises(CollateralError):
        asyncio.run(StaticCollateral(TEXT).get_json(b"garbage", VECTOR_NOW))


class _FailingSource:
    """A collateral source whose upstream (PCS/PCCS) is down."""

    async def get_json(self, quote: bytes, now: int) -> str:
        raise CollateralError("PCS unreachable")


@pytest.mark.parametrize("source", ["none", "failing"])
def test_collateral_refusals_are_documented_not_server_faults(source: str) -> None:
    """No source configured is a configuration (404 ``collateral_not_served``, do not
    retry); a failing source is transient (503 ``collateral_unavailable`` + Retry-After)."""
    import httpx

    from chutes_subnet.gateway.attest_relay import COLLATERAL_RETRY_AFTER_S
    from tests.client_fixtures import gateway

    with gateway([], collateral=None if source == "none" else _FailingSource()) as gw:
        resp = httpx.post(f"{gw.url}/e2e/collateral", content=vector_quote(), timeout=10,
                          headers={"Authorization": f"Bearer {gw.key}"})
    if source == "none":
        assert (resp.status_code, resp.json()["reason"]) == (404, "collateral_not_served")
        assert "retry-after" not in resp.headers
    else:
        assert (resp.status_code, resp.json()["reason"]) == (503, "collateral_unavailable")
        assert resp.headers["retry-after"] == str(COLLATERAL_RETRY_AFTER_S)
