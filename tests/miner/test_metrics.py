"""``/health`` and ``/metrics`` of a real miner: load without per-request counts, and the
metrics a request leaves."""

from __future__ import annotations

import httpx

from tests.miner_fixtures import Env, sealed


def test_health_and_metrics(env: Env) -> None:
    h = httpx.get(env.url + "/health").json()
    assert h["status"] == "ok" and h["instance_id"] == env.inst.instance_id and h["simulated_tee"] is True
    assert "e2e_pubkey" not in h and h["load"] == "low"
    assert "in_flight" not in h and "capacity" not in h  # no per-request counts (issue 17)
    headers, blob, _ = sealed(env.inst, stream=True)
    assert env.post("/e2e/invoke", blob, headers).status_code == 200
    text = httpx.get(env.url + "/metrics").text
    assert 'chutes_miner_ttft_seconds_count{mode="stream"}' in text
    assert 'chutes_miner_tokens_per_second_count{mode="stream"}' in text
    assert 'chutes_miner_requests_total{route="invoke",status="200"}' in text
    assert 'chutes_miner_tokens_total{kind="completion"}' in text
    assert "chutes_miner_in_flight 0.0" in text
