"""Discovery (``GET /e2e/instances/{chute}``) has a per-key budget by default, also for a
key created without a rate: each answer issues nonces, so an unlimited key could mint
them without end (issue 17)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import httpx
import pytest

from chutes_subnet.errors import ConfigError
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.cli import _gateway_settings, add_gateway_commands
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.ratelimit import RateLimiter
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gateway(config: GatewayConfig, clock: Clock, **key: Any) -> tuple[Any, list[str]]:
    keys = MemoryApiKeyStore()
    secrets = [keys.create(f"k{i}", **key)[0] for i in range(2)]
    app = create_app(config, registry=MemoryInstanceRegistry(), nonce_store=MemoryNonceStore(),
                     keys=keys, usage=MemoryUsageMeter(), limiter=RateLimiter(clock=clock))
    return app, secrets


async def _discover(app: Any, secret: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw") as c:
        return [await c.get("/e2e/instances/somechute",
                            headers={"Authorization": f"Bearer {secret}"}) for _ in range(n)]


def test_default_budget_applies_to_a_key_created_without_a_rate() -> None:
    cfg = GatewayConfig()
    assert (cfg.discovery_rate, cfg.discovery_burst) == (10.0, 50)
    clock = Clock()
    app, (secret, other) = _gateway(cfg, clock)  # no --rate: unlimited on invoke

    async def go() -> None:
        first = await _discover(app, secret, 51)
        assert {r.json()["reason"] for r in first[:50]} == {"unknown_chute"}  # past the budget
        over = first[50]
        assert over.status_code == 429 and over.json()["reason"] == "discovery_rate_limited"
        assert over.headers["retry-after"] == "1"  # one token at 10/s
        assert (await _discover(app, other, 1))[0].json()["reason"] == "unknown_chute"  # per key
        clock.now += 0.5  # 5 tokens back at 10/s
        again = [r.status_code for r in await _discover(app, secret, 6)]
        assert again == [404] * 5 + [429]

    asyncio.run(go())


def test_budget_is_configurable_and_a_keys_own_rate_still_applies() -> None:
    clock = Clock()
    app, (secret, _) = _gateway(GatewayConfig(discovery_rate=0.25, discovery_burst=2), clock)

    async def go() -> None:
        got = await _discover(app, secret, 3)
        assert [r.status_code for r in got] == [404, 404, 429]
        assert got[2].headers["retry-after"] == "4" and "discovery" in got[2].json()["error"]

    asyncio.run(go())
    app, (secret, _) = _gateway(GatewayConfig(), Clock(), rate=1.0, burst=1)
    got = asyncio.run(_discover(app, secret, 2))
    assert got[1].status_code == 429 and got[1].json()["reason"] == "rate_limited"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_gateway_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_flags_set_the_budget_and_refuse_nonsense(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHUTES_SUBNET_HOME", str(tmp_path / "data"))
    base = ["gateway", "--dangerous-unsigned-forwards"]
    args = build_parser().parse_args([*base, "--discovery-rate", "3", "--discovery-burst", "7"])
    settings = _gateway_settings(args)
    assert (settings["discovery_rate"], settings["discovery_burst"]) == (3.0, 7)
    for bad in (["--discovery-rate", "0"], ["--discovery-rate", "nan"],
                ["--discovery-burst", "0"]):
        with pytest.raises(ConfigError, match="--discovery-rate must be > 0"):
            _gateway_settings(build_parser().parse_args(base + bad))
