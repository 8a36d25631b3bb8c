"""/health (liveness), /ready (readiness) and /metrics on the gateway, the proxy and the
validator; chain-health metrics and the weights fallback (issue 17, "Operations")."""

from __future__ import annotations

import time

import httpx
import pytest

from chutes_subnet.chain import LocalChain, Metagraph, Neuron, WeightsResult
from chutes_subnet.client.proxy import create_proxy_app
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.errors import NonceStoreUnavailable
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import InstanceRecord, MemoryInstanceRegistry
from chutes_subnet.validator.metrics import ValidatorMetrics, create_metrics_app
from chutes_subnet.validator.neuron import fallback_weights
from chutes_subnet.validator.results import RoundReport
from tests.gateway_fixtures import record_for

KP = KeyPair.generate()


def _record() -> InstanceRecord:
    return record_for(KP, "http://127.0.0.1:9", chute_id="c" * 8, model="m")


class DownNonces(MemoryNonceStore):
    async def consume(self, nonce, scope):
        raise NonceStoreUnavailable("down")


def _gateway(registry, nonces=None):
    keys = MemoryApiKeyStore()
    secret, _ = keys.create("k")
    app = create_app(GatewayConfig(), registry=registry, nonce_store=nonces if nonces is not None else MemoryNonceStore(),
                     keys=keys, usage=MemoryUsageMeter())
    return app, secret


async def _get(app, path, **kw):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1") as client:
        return await client.get(path, **kw)


async def test_gateway_ready_follows_instances_and_the_nonce_store():
    registry = MemoryInstanceRegistry()
    app, _ = _gateway(registry)
    assert (await _get(app, "/health")).status_code == 200           # alive
    resp = await _get(app, "/ready")
    assert resp.status_code == 503 and resp.json()["reason"] == "no_live_instances"
    registry.upsert(_record())
    resp = await _get(app, "/ready")
    assert resp.status_code == 200 and resp.json()["live_instances"] == 1
    app, _ = _gateway(registry, DownNonces())
    resp = await _get(app, "/ready")
    assert resp.status_code == 503 and resp.json()["reason"] == "nonce_store_unavailable"


async def test_gateway_metrics_count_refusals_by_reason_only():
    registry = MemoryInstanceRegistry()
    registry.upsert(_record())
    app, secret = _gateway(registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1") as client:
        assert (await client.post("/e2e/invoke", content=b"x")).status_code == 401
        assert (await client.get("/e2e/instances/unknown",
                                 headers={"Authorization": "Bearer nope"})).status_code == 401
        text = (await client.get("/metrics")).text
    assert 'chutes_gateway_refusals_total{reason="unauthorized"} 2.0' in text
    assert 'chutes_gateway_invokes_total{status="401"} 1.0' in text
    assert "chutes_gateway_live_instances 1.0" in text
    assert secret not in text and KP.instance_id not in text  # no keys, no instance ids


async def test_proxy_ready_and_metrics():
    app = create_proxy_app("http://127.0.0.1:1", verify="gateway")  # nothing listens there
    assert (await _get(app, "/health")).status_code == 200
    resp = await _get(app, "/ready")
    assert resp.status_code == 503 and resp.json()["reason"] == "gateway_unreachable"
    resp = await _get(app, "/metrics")
    assert resp.status_code == 200 and "chutes_proxy_requests" in resp.text


def _report(block: int, ok: bool | None) -> RoundReport:
    result = None if ok is None else WeightsResult(ok, "x", block)
    return RoundReport(round_index=1, block=block, started_at=time.time(), duration_s=2.5,
                       results=(), round_scores={}, ema={}, weights={}, weights_result=result)


async def test_validator_ready_and_chain_health_metrics():
    metrics = ValidatorMetrics()
    app = create_metrics_app(metrics, list, stale_after=60)
    resp = await _get(app, "/ready")
    assert resp.status_code == 503 and resp.json()["reason"] == "no_round_yet"
    metrics.observe_round(_report(100, True))
    metrics.observe_round(_report(130, False))
    assert (await _get(app, "/ready")).status_code == 200
    text = (await _get(app, "/metrics")).text
    assert "chutes_validator_last_weights_set_block 100.0" in text
    assert "chutes_validator_blocks_since_weights_set 30.0" in text
    assert "chutes_validator_last_round_duration_seconds 2.5" in text
    metrics.last_round_at = time.time() - 120                       # the loop is stuck
    resp = await _get(app, "/ready")
    assert resp.status_code == 503 and resp.json()["reason"] == "rounds_stalled"


def test_weights_fall_back_to_the_owner_uid_when_no_miner_passes():
    graph = Metagraph(netuid=1, block=5, neurons=(
        Neuron(0, "owner", "ck", False, 0.0, None), Neuron(1, "m", "ck", False, 0.0, "1.2.3.4:1")))
    assert fallback_weights({}, graph, 0) == {0: 1.0}
    assert fallback_weights({1: 0.0}, graph, 0) == {0: 1.0}
    assert fallback_weights({1: 1.0}, graph, 0) == {1: 1.0}
    assert fallback_weights({}, graph, None) == {}
    assert fallback_weights({}, graph, 7) == {}                      # not in the metagraph


async def test_validator_round_sets_fallback_weights_on_chain(tmp_path):
    from chutes_subnet.validator import Validator, ValidatorConfig, ValidatorState
    from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58
    from tests import validator_fixtures as vf

    chain = LocalChain(":memory:", netuid=1, block_time=0, weights_rate_limit=0)
    chain.register("owner-hotkey", "owner-ck")                       # uid 0, as on subtensor
    wallet = ensure_dev_wallet("v", "default", str(tmp_path))
    chain.register(hotkey_ss58(wallet), coldkey_ss58(wallet), stake=10, validator_permit=True)
    chain.register("miner-hotkey", "miner-ck")                       # never serves
    validator = Validator(ValidatorConfig(dangerous_accept_simulated_tee=True), chain=chain,
                          wallet=wallet, verifier=vf.dev_verifier(),
                          state=ValidatorState(":memory:"))
    try:
        report = await validator.run_round()
    finally:
        await validator.aclose()
    assert report.weights == {}                                      # nobody earned weight
    assert report.weights_result is not None and report.weights_result.success
    assert chain.get_weights(hotkey_ss58(wallet)) == {0: 1.0}        # burned, not aged out


@pytest.mark.parametrize("bad", [-1])
def test_fallback_uid_is_validated(bad):
    from chutes_subnet.validator import ValidatorConfig

    with pytest.raises(ValueError, match="fallback_uid"):
        ValidatorConfig(fallback_uid=bad)


def test_miner_logs_the_safe_cause_of_upstream_failures(caplog):
    """Operators see the exception class and status, never request or answer content."""
    import logging

    from chutes_subnet.inference import UpstreamError
    from chutes_subnet.miner.invoke import _backend_refusal

    with caplog.at_level(logging.WARNING, logger="chutes_subnet.miner"):
        refusal = _backend_refusal(UpstreamError("upstream answered HTTP 503", status=503))
        _backend_refusal(ConnectionResetError("peer said: secret prompt text"))
    assert refusal.status == 502 and refusal.reason == "upstream_error"
    text = caplog.text
    assert "UpstreamError: upstream answered HTTP 503" in text
    assert "ConnectionResetError" in text and "secret prompt text" not in text
