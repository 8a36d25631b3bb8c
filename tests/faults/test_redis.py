"""Redis (the gateway's shared nonce store) restarted under load.

Real parts: a private redis-server process (stopped and started again on the same
port, without persistence, so every issued nonce is lost), two miner processes, an
in-process gateway on loopback using :class:`RedisNonceStore`, and concurrent E2EE
clients (v1 and v2, stream and JSON) sending without pause.

Expected: while Redis is down the gateway answers clear ``503
nonce_store_unavailable`` with ``Retry-After: 1`` (never a 500, never a hang); once it
is back, clients recover on their own (stale pools are refused with 409 and
rediscovered); no nonce is ever accepted twice, every request ends in an answer or a
clear error, and each answer was executed exactly once.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
import pytest

from chutes_subnet.client import AsyncE2EETransport
from chutes_subnet.inference import DEFAULT_MODEL_ID
from chutes_subnet.nonces import NonceScope, RedisNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.single_use import Use
from tests.reliability_harness import LoopbackSubnet, miner_counter
from tests.servers import RedisServer, UvicornThread

# slow: restarts a redis-server under load (about 15 s on 2 busy cores)
pytestmark = pytest.mark.slow

CLIENTS = 8


class CountingNonceStore:
    """The real Redis store, recording every nonce it accepted (in acceptance order)."""

    def __init__(self, inner: RedisNonceStore) -> None:
        self.inner = inner
        self.accepted: list[tuple[str, NonceScope]] = []

    async def issue(self, scope: NonceScope, count: int, ttl: float = 90.0) -> list[str]:
        return await self.inner.issue(scope, count, ttl)

    async def consume(self, nonce: str, scope: NonceScope) -> Use:
        use = await self.inner.consume(nonce, scope)
        if use.ok:
            self.accepted.append((nonce, scope))
        return use

    async def aclose(self) -> None:
        await self.inner.aclose()


class Load:
    """``CLIENTS`` clients sending without pause until stopped; outcomes by phase."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.phase = "before"
        self.outcomes: list[tuple[str, str]] = []  # (phase, "ok" | failure reason)
        self.retry_after: set[str] = set()
        self.sent = 0
        self.stop = asyncio.Event()

    def count(self, phase: str, outcome: str = "ok") -> int:
        return sum(1 for p, o in self.outcomes if p == phase and o == outcome)

    async def _one(self, http: httpx.AsyncClient, i: int) -> str:
        body = {"model": DEFAULT_MODEL_ID, "max_tokens": 2, "stream": i % 2 == 1,
                "messages": [{"role": "user", "content": f"redis {i}"}]}
        async with http.stream("POST", f"{self.url}/v1/chat/completions", json=body) as resp:
            raw = await resp.aread()
            if resp.status_code != 200:
                self.retry_after.add(resp.headers.get("retry-after", ""))
                return f"http_{resp.status_code}:{json.loads(raw).get('reason', '')}"
            if body["stream"]:
                events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
                if events[-1:] != ["[DONE]"] or any('"error"' in e for e in events):
                    return "stream_error"
            else:
                json.loads(raw)["choices"][0]["message"]["content"]
        return "ok"

    async def client(self, n: int) -> None:
        transport = AsyncE2EETransport(versions=(1 + n % 2,), verify="gateway")
        async with httpx.AsyncClient(transport=transport, timeout=30,
                                     headers={"Authorization": f"Bearer {self.key}"}) as http:
            i = n
            while not self.stop.is_set():
                self.sent += 1
                try:
                    outcome = await self._one(http, i)
                except (httpx.HTTPError, ValueError) as exc:  # a clear client-side error
                    outcome = type(exc).__name__
                self.outcomes.append((self.phase, outcome))  # phase at completion
                i += CLIENTS
                if outcome != "ok":
                    await asyncio.sleep(0.05)  # what a client does on 503 Retry-After, faster


async def _until(predicate: Any, deadline_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not predicate():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def subnet(tmp_path_factory):
    with LoopbackSubnet(tmp_path_factory.mktemp("redis")) as s:
        s.add_miner("a", max_concurrency=16)
        s.add_miner("b", max_concurrency=16)
        s.wait_miners()
        yield s


async def test_redis_restart_under_load_degrades_to_503_and_recovers(subnet):
    registry = MemoryInstanceRegistry()
    report = await subnet.publish(registry)
    assert all(r.ok for r in report.results), [(r.uid, r.reason) for r in report.results]
    executed_before = sum(miner_counter(m.metrics(), "chutes_miner_requests", route="invoke",
                                        status="200") for m in subnet.miners)
    redis = RedisServer().start()
    store = CountingNonceStore(RedisNonceStore(redis.url, timeout=1.0))
    app, key = subnet.gateway_app(registry, store)
    try:
        with UvicornThread(app) as gw:
            load = Load(gw.url, key)
            tasks = [asyncio.create_task(load.client(n)) for n in range(CLIENTS)]
            try:
                await _until(lambda: load.count("before") >= 20, 60, "traffic before the outage")
                load.phase = "down"
                await asyncio.to_thread(redis.stop)
                await _until(lambda: load.count("down", "http_503:nonce_store_unavailable") >= 10,
                             30, "503s while Redis is down")
                await asyncio.to_thread(redis.start)  # same port, empty: every nonce is gone
                load.phase = "after"
                await _until(lambda: load.count("after") >= 40, 60, "recovery after restart")
            finally:
                load.stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), 60)

        # nonces the gateway accepted (before and after the restart) stay dead
        checker = RedisNonceStore(redis.url, timeout=1.0)  # this loop's own connections
        try:
            for nonce, scope in store.accepted[:25] + store.accepted[-25:]:
                assert await checker.consume(nonce, scope) is Use.UNKNOWN
        finally:
            await checker.aclose()
    finally:
        redis.stop()

    by_phase = {p: Counter(o for q, o in load.outcomes if q == p) for p in ("before", "down", "after")}
    # nothing lost: every request sent ended in an answer or a clear error
    assert len(load.outcomes) == load.sent
    assert set(by_phase["before"]) == {"ok"}, by_phase
    # while down: only clear 503s (and answers that were already past the nonce check)
    assert set(by_phase["down"]) <= {"ok", "http_503:nonce_store_unavailable"}, by_phase
    assert by_phase["down"]["http_503:nonce_store_unavailable"] >= 10
    assert load.retry_after == {"1"}
    # recovered: clients rediscovered by themselves (stale pools got 409 and were
    # refreshed inside the transport); a 503 after the restart can only be a request
    # refused just before it, so at most one per client, and the tail is all answers
    assert by_phase["after"]["ok"] >= 40, by_phase
    assert set(by_phase["after"]) <= {"ok", "http_503:nonce_store_unavailable"}, by_phase
    assert by_phase["after"]["http_503:nonce_store_unavailable"] <= CLIENTS, by_phase
    assert {o for _, o in load.outcomes[-2 * CLIENTS:]} == {"ok"}, load.outcomes[-2 * CLIENTS:]

    # no nonce accepted twice, and every answer executed exactly once at a miner
    nonces = [n for n, _ in store.accepted]
    assert len(nonces) == len(set(nonces))
    oks = sum(c["ok"] for c in by_phase.values())
    texts = [m.metrics() for m in subnet.miners]
    executed = sum(miner_counter(t, "chutes_miner_requests", route="invoke", status="200")
                   for t in texts) - executed_before
    assert executed == oks == len(nonces)
    assert sum(miner_counter(t, "chutes_miner_errors", reason="replayed") for t in texts) == 0
