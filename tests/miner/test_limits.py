"""Miner limits on a real server: body size (413, also chunked) and concurrency (429 with
Retry-After, slot freed by an abandoned stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx

from chutes_subnet.miner import MinerConfig
from tests.miner_fixtures import MAX_BODY, Env, payload, sealed, start_miner


def test_bodies_over_the_limit_are_refused_413(env: Env) -> None:
    headers, _, _ = sealed(env.inst)
    big = b"\x02" + b"\x00" * MAX_BODY
    r = env.post("/e2e/invoke", big, headers, signer=None)
    assert r.status_code == 413 and r.json()["reason"] == "too_large"

    def chunked() -> Iterator[bytes]:
        for _ in range(5):
            yield b"\x00" * (MAX_BODY // 4)

    r = httpx.post(env.url + "/e2e/invoke", content=chunked(), headers=headers)
    assert r.status_code == 413


async def test_concurrency_limit_answers_429_with_retry_after(wallets) -> None:
    cfg = MinerConfig(tee="simulated", max_concurrency=1,
                      invoke_auth="none", retry_after=3)
    server, inst = start_miner(cfg, wallets, None)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            headers, blob, _ = sealed(inst, stream=True, body=payload(max_tokens=3000))
            async with client.stream("POST", server.url + "/e2e/invoke", content=blob,
                                     headers=headers) as first:
                assert first.status_code == 200
                async for _ in first.aiter_bytes():
                    break  # the stream is running and holds the only slot
                h2, b2, _ = sealed(inst)
                r = await client.post(server.url + "/e2e/invoke", content=b2, headers=h2)
                assert r.status_code == 429 and r.headers["retry-after"] == "3"
                assert r.json()["reason"] == "busy"
            for _ in range(200):  # the abandoned stream frees its slot
                if (await client.get(server.url + "/health")).json()["load"] == "low":
                    break
                await asyncio.sleep(0.02)
            h3, b3, _ = sealed(inst)
            assert (await client.post(server.url + "/e2e/invoke", content=b3,
                                      headers=h3)).status_code == 200
    finally:
        server.stop()
