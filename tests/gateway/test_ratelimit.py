"""Rate limits shared by replicas through a real redis-server, and failing closed."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from chutes_subnet.errors import StoreUnavailable
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.ratelimit import (
    RateLimiter,
    RedisRateLimiter,
    open_rate_limiter,
)
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from tests.servers import free_port


def test_replicas_share_one_bucket(redis_server) -> None:
    async def go() -> tuple[list[bool], float]:
        a, b = RedisRateLimiter(redis_server.url), RedisRateLimiter(redis_server.url)
        key = f"k{time.monotonic_ns()}"
        got = await asyncio.gather(*(lim.acquire(key, 0.5, 3) for lim in (a, b) * 4))
        denied = await a.acquire(key, 0.5, 3)
        await a.aclose()
        await b.aclose()
        return [d.allowed for d in got], denied.retry_after

    allowed, retry_after = asyncio.run(go())
    assert allowed.count(True) == 3  # burst 3 across both replicas, not 3 each
    assert 1.0 < retry_after <= 2.0  # one token at 0.5/s


def test_bucket_refills_at_the_rate(redis_server) -> None:
    async def go() -> list[bool]:
        lim = RedisRateLimiter(redis_server.url)
        key = f"r{time.monotonic_ns()}"
        out = [(await lim.acquire(key, 10.0, 1)).allowed for _ in range(2)]
        await asyncio.sleep(0.15)  # 10/s: one token back after 0.1 s
        out.append((await lim.acquire(key, 10.0, 1)).allowed)
        out.append((await lim.acquire("unlimited", None)).allowed)
        await lim.aclose()
        return out

    assert asyncio.run(go()) == [True, False, True, True]


def test_unreachable_redis_fails_closed() -> None:
    async def go() -> None:
        lim = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
        try:
            await lim.acquire("k", 1.0)
        finally:
            await lim.aclose()

    with pytest.raises(StoreUnavailable, match="rate limiter unavailable"):
        asyncio.run(go())


def test_gateway_answers_503_when_the_shared_limiter_is_down() -> None:
    keys = MemoryApiKeyStore()
    secret, _ = keys.create("k", rate=5.0)
    app = create_app(GatewayConfig(), registry=MemoryInstanceRegistry(),
                     nonce_store=MemoryNonceStore(), keys=keys, usage=MemoryUsageMeter(),
                     limiter=RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5))

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://gw") as c:
            return await c.get("/v1/usage", headers={"Authorization": f"Bearer {secret}"})

    r = asyncio.run(go())
    assert r.status_code == 503 and r.json()["reason"] == "store_unavailable"
    assert r.headers["retry-after"] == "1"


def test_open_rate_limiter_urls(redis_server) -> None:
    assert isinstance(open_rate_limiter(None), RateLimiter)
    assert isinstance(open_rate_limiter("memory://"), RateLimiter)
    lim = open_rate_limiter(redis_server.url)
    assert isinstance(lim, RedisRateLimiter)
    asyncio.run(lim.aclose())
    with pytest.raises(ValueError, match="unsupported rate limiter URL"):
        open_rate_limiter("http://x")


def test_rate_limiter_refills_over_time() -> None:
    t = [0.0]
    lim = RateLimiter(clock=lambda: t[0])
    assert [lim.check("k", 2.0, 2).allowed for _ in range(3)] == [True, True, False]
    d = lim.check("k", 2.0, 2)
    assert not d.allowed and d.retry_after == pytest.approx(0.5)
    t[0] = 0.5
    assert lim.check("k", 2.0, 2).allowed
    assert lim.check("other", None).allowed
