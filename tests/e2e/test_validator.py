"""End to end on loopback: real miner servers (one honest, four faulty), a LocalChain,
the real validator with real attestation verification and real v2 E2EE."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from chutes_subnet.attestation.verify.signed_statements import key_sha256, parse_statement
from chutes_subnet.chain import plan_weights, quantize_weights
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.validator import (
    BenchmarkConfig,
    Validator,
    ValidatorConfig,
    ValidatorState,
    build_score_table,
    format_score_table,
)
from tests import validator_fixtures as vf

# slow: real miner servers and full validator rounds (about 20 s on 2 busy cores)
pytestmark = pytest.mark.slow

FAULTS = {
    "honest": None,
    "debug": "debug-quote",
    "foreign": "foreign-hotkey",
    "wrong": "wrong-tokens",
    "stall": "stall",
}
EXPECTED_REASON = {
    "debug": "attestation:debug_td",
    "foreign": "attestation:binding_mismatch",
    "wrong": "wrong_output",
    "stall": "timeout",
}


@pytest.fixture(scope="module")
def subnet(tmp_path_factory):
    with vf.local_subnet(tmp_path_factory.mktemp("subnet"), FAULTS) as s:
        yield s


def _config(**kw) -> ValidatorConfig:
    bench = BenchmarkConfig(prompts_per_miner=2, max_tokens=12, verify_sample=2)
    base = dict(concurrency=8, timeout=2.5, rechallenge_probability=0.5,
                dangerous_accept_simulated_tee=True, benchmark=bench)
    base.update(kw)
    return ValidatorConfig(**base)


async def test_rounds_give_honest_miner_all_weight(subnet, tmp_path):
    registry = MemoryInstanceRegistry()
    validator = Validator(_config(), chain=subnet.chain, wallet=subnet.validator_wallet,
                          verifier=vf.dev_verifier(), state=ValidatorState(tmp_path / "v.sqlite"),
                          registry=registry)
    try:
        reports = [await validator.run_round() for _ in range(3)]
    finally:
        await validator.aclose()
    last = reports[-1]
    honest = subnet.by_name("honest")
    hres = last.result_for(honest.uid)
    assert hres is not None and hres.ok, hres
    assert hres.attested and hres.attestation is not None and hres.attestation.simulated
    assert hres.successes == hres.requests == 2
    assert hres.verified == 2                      # both answers recomputed and equal
    assert hres.tokens_per_s > 0 and hres.ttft_s is not None and hres.ttft_s > 0
    # later rounds reuse the cached key at least sometimes, or re-challenge: both fine,
    # but the first round must have challenged
    assert reports[0].result_for(honest.uid).attestation_cached is False

    for name, reason in EXPECTED_REASON.items():
        miner = subnet.by_name(name)
        for report in reports:
            res = report.result_for(miner.uid)
            assert res is not None and res.reason == reason, (name, res)
            assert res.detail_text
        assert last.ema[miner.uid] == 0.0, name
        assert miner.uid not in last.weights
    # attestation failures keep the verdict summary as evidence
    debug = last.result_for(subnet.by_name("debug").uid)
    assert debug.attestation is not None and "debug_td" in debug.attestation.reason_codes
    assert not debug.attestation.ok

    # weights: all on the honest miner, normalized, equal to the SDK math, on chain
    assert last.weights == {honest.uid: 1.0}
    assert last.weights_result is not None and last.weights_result.success
    on_chain = subnet.chain.get_weights(subnet.validator_hotkey)
    assert on_chain == plan_weights({u: e for u, e in last.ema.items()})
    assert abs(sum(on_chain.values()) - 1.0) < 1e-12
    assert quantize_weights(on_chain) == {honest.uid: 65535}

    # EMA: 3 rounds of 1.0 with alpha 0.3
    assert last.ema[honest.uid] == pytest.approx(1 - 0.7 ** 3)

    # only the honest instance is published for the gateway
    live = registry.list_verified()
    assert [r.hotkey for r in live] == [honest.hotkey]
    # ... with this validator's signed statement vouching for exactly that key (one, not
    # one per round: a newer statement replaces the validator's older one)
    assert len(live[0].statements) == 1
    signed = parse_statement(json.loads(live[0].statements[0]))
    s = signed.statement
    assert signed.signature_valid() and s.validator == subnet.validator_hotkey
    assert s.instance_id == live[0].instance_id and s.chute_id == live[0].chute_id
    assert s.e2e_key_sha256 == key_sha256(base64.b64decode(live[0].e2e_pubkey))
    assert s.receipt_key_sha256 == key_sha256(base64.b64decode(live[0].receipt_pubkey))
    assert s.simulated and s.netuid == subnet.chain.netuid and s.block <= s.expires_block

    # the score table shows every miner with its reason
    state = ValidatorState(tmp_path / "v.sqlite")
    rows = {r.uid: r for r in build_score_table(state.load())}
    state.close()
    assert rows[honest.uid].attested and rows[honest.uid].weight == 1.0
    for name, reason in EXPECTED_REASON.items():
        row = rows[subnet.by_name(name).uid]
        assert row.reason == reason and row.weight == 0.0 and row.ema == 0.0
    text = format_score_table(list(rows.values()))
    assert "attestation:debug_td" in text and "wrong_output" in text


async def test_validator_without_permit_is_refused_by_miners(subnet, tmp_path):
    from chutes_subnet.wallets import ensure_dev_wallet

    stranger = ensure_dev_wallet("stranger", "default", str(tmp_path / "w"))
    validator = Validator(_config(set_weights=False), chain=subnet.chain, wallet=stranger,
                          verifier=vf.dev_verifier(), state=ValidatorState(":memory:"))
    try:
        report = await validator.run_round()
    finally:
        await validator.aclose()
    honest = report.result_for(subnet.by_name("honest").uid)
    assert honest.reason == "bad_response" and "HTTP 403" in honest.detail_text
    assert report.weights == {} and report.weights_result is None


async def test_production_verifier_refuses_simulated_miners(subnet):
    from chutes_subnet.attestation.verify.policy import Policy
    from chutes_subnet.attestation.verify.verifier import Verifier

    validator = Validator(_config(set_weights=False), chain=subnet.chain,
                          wallet=subnet.validator_wallet,
                          verifier=Verifier(Policy.default()), state=ValidatorState(":memory:"))
    try:
        report = await validator.run_round()
    finally:
        await validator.aclose()
    for miner in subnet.miners:
        res = report.result_for(miner.uid)
        assert res.reason == "attestation:simulated_tee", (miner.name, res.reason)
    assert all(v == 0.0 for v in report.round_scores.values())


async def test_metrics_app_exposes_round(subnet, tmp_path):
    from chutes_subnet.validator import create_metrics_app

    validator = Validator(_config(set_weights=False), chain=subnet.chain,
                          wallet=subnet.validator_wallet, verifier=vf.dev_verifier(),
                          state=ValidatorState(tmp_path / "m.sqlite"))
    try:
        await validator.run_round()
        app = create_metrics_app(validator.metrics, validator.score_table)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://v") as client:
            text = (await client.get("/metrics")).text
            scores = (await client.get("/scores")).json()
    finally:
        await validator.aclose()
    assert "chutes_validator_rounds_total 1.0" in text
    assert ('chutes_validator_miner_failures_total{kind="attestation",'
            'reason="attestation:debug_td"} 1.0') in text
    assert "chutes_validator_miners_attested 3.0" in text  # honest, wrong, stall attested
    assert {row["uid"] for row in scores} == {m.uid for m in subnet.miners}


async def test_weights_respect_the_rate_limit(subnet, tmp_path):
    from chutes_subnet.chain import LocalChain

    chain = LocalChain(subnet.chain_path, netuid=7)   # same file, its own connection
    validator = Validator(_config(), chain=chain, wallet=subnet.validator_wallet,
                          verifier=vf.dev_verifier(), state=ValidatorState(":memory:"))
    try:
        chain._run(lambda conn: conn.execute(  # raise the limit for this test only
            "UPDATE subnets SET weights_rate_limit = 50 WHERE netuid = 7"))
        subnet.chain.advance(60)   # earlier tests set weights: let the limit pass
        first = await validator.run_round()
        second = await validator.run_round()
    finally:
        chain._run(lambda conn: conn.execute(
            "UPDATE subnets SET weights_rate_limit = 0 WHERE netuid = 7"))
        await validator.aclose()
        chain.close()
    assert first.weights_result is not None and first.weights_result.success
    assert second.weights_result is not None and not second.weights_result.success
    assert "rate limited" in second.weights_result.message
    assert second.weights == {subnet.by_name("honest").uid: 1.0}   # still planned and stored
