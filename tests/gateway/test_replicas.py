"""Three gateway processes on one PostgreSQL and one Redis behave as one gateway.

PostgreSQL holds keys, usage, the journal and the instance registry; Redis holds the
nonces and the rate-limit buckets.

Shown against the real miner (embedded model): a nonce is consumed exactly once however
many replicas see it concurrently; a rate limit and a token quota hold across
replicas; usage totals in PostgreSQL equal what clients received; and a replica killed
(SIGKILL) mid-load loses nothing: its clients retry on another replica and every
logical request is answered, with every answer billed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from chutes_subnet.gateway.state_stores import open_gateway_stores
from chutes_subnet.gateway.usage import SQLUsageMeter, Usage
from chutes_subnet.inference import DEFAULT_SEED, reference_completion
from chutes_subnet.registry import open_registry
from chutes_subnet.stores import open_database
from chutes_subnet.wire.call import SealTarget, seal_call
from chutes_subnet.wire.messages import DiscoveredInstance
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.miner_fixtures import miner_record, start_real_miner
from tests.servers import free_port

MODEL = "test/replicas-1"
CHUTE = chute_id_for_model(MODEL)
PATH = "/v1/chat/completions"
MAX_TOKENS = 4


def _payload(i: int) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"q{i % 7}"}],
            "max_tokens": MAX_TOKENS}


@dataclass
class Fleet:
    urls: list[str]
    procs: list[subprocess.Popen[bytes]]
    db_url: str
    keys: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)


def _start_gateway(port: int, *, db: str, redis: str, home: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "chutes_subnet.gateway", "gateway",
         "--listen", f"127.0.0.1:{port}", "--db", db, "--nonces", redis,
         "--rate-limits", redis, "--registry", db,
         "--log-level", "warning", "--dangerous-unsigned-forwards",
         # the load test discovers before every call (90 in a few seconds, one key)
         "--discovery-rate", "1000", "--discovery-burst", "1000"],
        env={**os.environ, "CHUTES_SUBNET_HOME": str(home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"gateway exited: {err}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gateway did not come up")


@pytest.fixture(scope="module")
def fleet(postgres_server, redis_server, tmp_path_factory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    db_url = postgres_server.new_database()
    stores = open_gateway_stores(db_url)  # migrates; the replicas find the schema ready
    keys = {
        "load": stores.keys.create("load"),
        "race": stores.keys.create("race"),
        "probe": stores.keys.create("probe"),
        "rated": stores.keys.create("rated", rate=0.05, burst=5),
        "quota": stores.keys.create("quota", quota_tokens=1),  # set below from real usage
    }
    stores.close()
    miner, inst = start_real_miner(MODEL, max_concurrency=64)
    registry = open_registry(db_url)  # what the validator writes, in the same database
    registry.upsert(miner_record(inst, miner.url, ttl=3600))
    registry.close()
    ports = [free_port() for _ in range(3)]
    procs = [_start_gateway(p, db=db_url, redis=redis_server.url, home=tmp) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            _wait_up(url, proc)
        yield Fleet(urls, procs, db_url, {k: v[0] for k, v in keys.items()},
                    {k: v[1].key_id for k, v in keys.items()})
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
        miner.stop()


async def _discover(http: httpx.AsyncClient, url: str, secret: str) -> tuple[SealTarget, list[str]]:
    r = await http.get(f"{url}/e2e/instances/{CHUTE}", headers={"Authorization": f"Bearer {secret}"})
    r.raise_for_status()
    info = DiscoveredInstance(**r.json()["instances"][0])
    return SealTarget.from_discovery(info), list(info.nonces)


async def _call(http: httpx.AsyncClient, url: str, secret: str, i: int) -> tuple[int, str | None]:
    """Discover at ``url``, seal, invoke there; (status, answer text or None)."""
    offer, nonces = await _discover(http, url, secret)
    call = seal_call(offer, chute_id=CHUTE, nonce=nonces[0], path=PATH, stream=False,
                     payload=_payload(i), version=2, api_key=secret)
    r = await http.post(f"{url}/e2e/invoke", headers=call.headers, content=call.body)
    if r.status_code != 200:
        return r.status_code, None
    return 200, call.open_json(r.content)["choices"][0]["message"]["content"]


def _usage(db_url: str, key_id: str) -> Usage:
    db = open_database(db_url)
    try:
        return SQLUsageMeter(db).totals(key_id)
    finally:
        db.close()


def test_a_nonce_is_consumed_once_across_replicas(fleet: Fleet) -> None:
    secret = fleet.keys["race"]

    async def go() -> list[list[int]]:
        out = []
        async with httpx.AsyncClient(timeout=30) as http:
            offer, nonces = await _discover(http, fleet.urls[0], secret)
            for n, nonce in enumerate(nonces[:4]):
                call = seal_call(offer, chute_id=CHUTE, nonce=nonce, path=PATH, stream=False,
                                 payload=_payload(n), version=2, api_key=secret)
                rs = await asyncio.gather(*(
                    http.post(f"{u}/e2e/invoke", headers=call.headers, content=call.body)
                    for u in fleet.urls * 2))
                out.append(sorted(r.status_code for r in rs))
        return out

    assert asyncio.run(go()) == [[200, 409, 409, 409, 409, 409]] * 4
    # The journal is shared too: any replica lists the 4 served requests (after a flush).
    time.sleep(1.5)
    seen = httpx.get(f"{fleet.urls[1]}/v1/requests", timeout=10,
                     headers={"Authorization": f"Bearer {secret}"}).json()["requests"]
    assert sorted(e["status"] for e in seen) == [200] * 4


def test_rate_limit_holds_across_replicas(fleet: Fleet) -> None:
    """burst 5 at 0.05/s: 5 requests pass across all three replicas, not 5 each."""
    secret = fleet.keys["rated"]

    async def go() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:
            rs = await asyncio.gather(*(
                http.get(f"{fleet.urls[i % 3]}/v1/usage",
                         headers={"Authorization": f"Bearer {secret}"}) for i in range(15)))
        return [r.status_code for r in rs]

    codes = asyncio.run(go())
    assert codes.count(200) == 5 and codes.count(429) == 10


def test_quota_spent_at_one_replica_is_refused_at_all(fleet: Fleet) -> None:
    secret, key_id = fleet.keys["quota"], fleet.key_ids["quota"]
    # The quota key was created with a 1-token quota: its first request is admitted
    # (nothing spent yet), every later one is refused, at every replica.

    async def go() -> tuple[int, list[int]]:
        async with httpx.AsyncClient(timeout=30) as http:
            first, _ = await _call(http, fleet.urls[0], secret, 0)
            await asyncio.sleep(1.5)  # > one flush interval: every replica re-reads totals
            later = []
            for url in fleet.urls:
                offer, nonces = await _discover(http, url, secret)
                call = seal_call(offer, chute_id=CHUTE, nonce=nonces[0], path=PATH,
                                 stream=False, payload=_payload(1), version=2, api_key=secret)
                r = await http.post(f"{url}/e2e/invoke", headers=call.headers, content=call.body)
                later.append(r.status_code)
                assert r.status_code != 429 or r.json()["reason"] == "quota_exhausted"
        return first, later

    first, later = asyncio.run(go())
    assert first == 200 and later == [429, 429, 429]
    assert _usage(fleet.db_url, key_id).requests == 1


def test_usage_is_exact_and_a_killed_replica_loses_nothing(fleet: Fleet) -> None:
    secret, key_id = fleet.keys["load"], fleet.key_ids["load"]
    expected = {i: reference_completion(PATH, _payload(i), seed=DEFAULT_SEED) for i in range(7)}
    total, workers = 90, 9
    served: dict[int, str] = {}
    interrupted = [0]
    victim = 2

    async def one(http: httpx.AsyncClient, i: int) -> None:
        start = i % 3
        for attempt in range(6):  # the client's failover: next replica on a dead one
            url = fleet.urls[(start + attempt) % 3]
            try:
                status, text = await _call(http, url, secret, i)
            except httpx.TransportError:
                interrupted[0] += 1
                continue
            assert status == 200, status
            served[i] = text or ""
            if len(served) >= total // 3:
                a_third_served.set()
            return
        raise AssertionError(f"request {i} never answered")

    a_third_served = asyncio.Event()

    async def load() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)

        async def worker() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                while not queue.empty():
                    await one(http, queue.get_nowait())

        async def killer() -> None:
            await a_third_served.wait()
            fleet.procs[victim].send_signal(signal.SIGKILL)

        await asyncio.gather(killer(), *(worker() for _ in range(workers)))

    asyncio.run(load())
    assert fleet.procs[victim].wait(timeout=10) == -signal.SIGKILL
    assert len(served) == total  # every logical request answered
    assert all(served[i] == expected[i % 7] for i in served)
    billed = _usage(fleet.db_url, key_id)
    # Nothing served went unbilled. An attempt cut off by the kill after its usage
    # commit but before its last bytes is billed although the client retried it:
    # at most one per interrupted attempt.
    assert total <= billed.requests <= total + interrupted[0]
    per_request = _one_request_usage(fleet)
    assert billed.prompt_tokens == billed.requests * per_request.prompt_tokens
    assert billed.completion_tokens == billed.requests * per_request.completion_tokens
    print(f"served={total} billed={billed.requests} interrupted_attempts={interrupted[0]}")


def _one_request_usage(fleet: Fleet) -> Usage:
    """What the miner reports for one request of this test (a separate key)."""
    async def go() -> int:
        async with httpx.AsyncClient(timeout=30) as http:
            return (await _call(http, fleet.urls[0], fleet.keys["probe"], 0))[0]

    assert asyncio.run(go()) == 200
    usage = _usage(fleet.db_url, fleet.key_ids["probe"])  # committed before the answer ended
    assert usage.requests == 1 and usage.completion_tokens > 0
    return usage
