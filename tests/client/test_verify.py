"""Verify before you send, end to end on loopback: real miners (simulated TD), a real
gateway relaying the client's own challenge, the E2EE transports, and what a lying
gateway or router gets caught at — always before a byte of the request is sent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from chutes_subnet.attestation.verify.policy import MeasurementProfile, Policy
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.client import AsyncE2EETransport, ClientPolicy, E2EETransport
from chutes_subnet.client.check import verify_model
from chutes_subnet.client.instance_verifier import InstanceVerifier
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.errors import (
    AttestationRateLimited,
    DowngradeError,
    NoVerifiedInstanceError,
)
from chutes_subnet.gateway.collateral_cache import StaticCollateral
from chutes_subnet.instance_id import instance_id_for_key
from chutes_subnet.miner import InstanceIdentity
from tests.client_fixtures import (
    VECTOR_NOW,
    VECTOR_REASONS,
    Recorder,
    Rewriter,
    gateway,
    vector_collateral_text,
    vector_gpu_nonce,
    vector_miner_app,
    vector_quote,
    vector_record,
)
from tests.miner_fixtures import miner_record, start_real_miner
from tests.servers import UvicornThread

MODEL = "test/verified"
MSG = [{"role": "user", "content": "the launch code is 0000"}]
DEV = ClientPolicy.development(gpu_count=1, dangerous_accept_simulated_tee=True)


@dataclass
class Miners:
    a: InstanceIdentity
    a_url: str
    b: InstanceIdentity
    b_url: str


@pytest.fixture(scope="module")
def miners() -> Iterator[Miners]:
    ta, a = start_real_miner(MODEL, max_concurrency=16)  # the burst test sends 6 at once
    tb, b = start_real_miner(MODEL)
    try:
        yield Miners(a, ta.url, b, tb.url)
    finally:
        ta.stop()
        tb.stop()


def sdk(gw_url: str, key: str, transport: httpx.BaseTransport) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw_url + "/v1", api_key=key, max_retries=0,
                         http_client=httpx.Client(transport=transport))


def cause(exc: BaseException) -> BaseException:
    """The typed error under the SDK's wrapper (or the error itself)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def test_instance_id_is_derived_from_the_key(miners: Miners) -> None:
    kp = KeyPair.generate()
    assert instance_id_for_key(kp.public_bytes) == __import__("hashlib").sha256(
        kp.public_bytes).hexdigest()[:32]
    assert miners.a.instance_id != miners.b.instance_id


def test_default_client_verifies_once_then_sends_and_pins(miners: Miners) -> None:
    with gateway([miner_record(miners.a, miners.a_url)]) as gw:
        rec = Recorder()
        t = E2EETransport(inner=rec, policy=DEV)
        client = sdk(gw.url, gw.key, t)
        for _ in range(3):
            assert client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=8).choices
        assert gw.log.count("/e2e/attest/") == 1 and gw.log.count("/e2e/invoke") == 3
        assert rec.paths().index(f"/e2e/attest/{miners.a.instance_id}") < \
            rec.paths().index("/e2e/invoke")
        assert all(b"launch code" not in body for _m, _p, body in rec.sent)
        assert t.rejected == []


def test_a_pinned_instance_whose_listed_key_changes_is_verified_again(miners: Miners) -> None:
    """A pin is for (instance id, key): once the gateway lists another key under the same
    id, the client challenges again and refuses — the pin is no way around the check."""
    rec = miner_record(miners.a, miners.a_url)
    with gateway([rec], nonces_per_instance=1) as gw:
        t = E2EETransport(policy=DEV)
        client = sdk(gw.url, gw.key, t)
        assert client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2).choices
        gw.registry._records[rec.instance_id] = dataclasses.replace(
            rec, e2e_pubkey=KeyPair.generate().public_b64)  # the gateway turns hostile
        with pytest.raises(Exception) as info:
            client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
        assert cause(info.value).failures[0].reason == "key_mismatch"
        assert gw.log.count("/e2e/attest/") == 2 and gw.log.count("/e2e/invoke") == 1


def test_async_transport_verifies_too(miners: Miners) -> None:
    async def run(url: str, key: str) -> str:
        t = AsyncE2EETransport(key, policy=DEV)
        async with httpx.AsyncClient(transport=t) as http:
            r = await http.post(url + "/v1/chat/completions",
                                json={"model": MODEL, "messages": MSG, "max_tokens": 4})
            return r.json()["choices"][0]["message"]["content"]

    with gateway([miner_record(miners.b, miners.b_url)]) as gw:
        assert isinstance(asyncio.run(run(gw.url, gw.key)), str)
        assert gw.log.count("/e2e/attest/") == 1 and gw.log.count("/e2e/invoke") == 1


def test_concurrent_cold_requests_share_one_verification(miners: Miners) -> None:
    """A burst at start-up (e.g. through the proxy): one relay in flight per instance is
    allowed, the others wait for its pin instead of failing with a 429."""
    async def burst(url: str, key: str) -> list[int]:
        t = AsyncE2EETransport(key, policy=DEV)
        async with httpx.AsyncClient(transport=t, timeout=60) as http:
            rs = await asyncio.gather(*(http.post(url + "/v1/chat/completions", json={
                "model": MODEL, "messages": MSG, "max_tokens": 2}) for _ in range(6)))
        assert t.rejected == []
        return [r.status_code for r in rs]

    with gateway([miner_record(miners.a, miners.a_url)], attest_per_instance=1) as gw:
        assert asyncio.run(burst(gw.url, gw.key)) == [200] * 6
        assert gw.log.count("/e2e/invoke") == 6


@pytest.mark.parametrize("listed", ["unattested_key", "other_instances_key"])
def test_gateway_listing_a_key_that_is_not_the_attested_one_is_caught(
        miners: Miners, listed: str) -> None:
    """The must-show case: the default client refuses before any byte of the request."""
    key = KeyPair.generate().public_b64 if listed == "unattested_key" else miners.b.e2e_pubkey
    lying = dataclasses.replace(miner_record(miners.a, miners.a_url), e2e_pubkey=key)
    with gateway([lying], compromised=True) as gw:
        rec = Recorder()
        t = E2EETransport(inner=rec, policy=DEV)
        with pytest.raises(Exception) as info:
            sdk(gw.url, gw.key, t).chat.completions.create(model=MODEL, messages=MSG)
        err = cause(info.value)
        assert isinstance(err, NoVerifiedInstanceError)
        assert [(f.instance_id, f.reason) for f in err.failures] == \
            [(miners.a.instance_id, "key_mismatch")]
        assert "key_mismatch" in str(err) and miners.a.instance_id in str(err)
        assert gw.log.count("/e2e/invoke") == 0 and "/e2e/invoke" not in rec.paths()
        assert t.rejected[-1].reason == "key_mismatch"


def test_gateway_relaying_another_instances_evidence_is_caught(miners: Miners) -> None:
    """B's id and key listed, but the relay goes to A: A's evidence is for another id."""
    rec_b = miner_record(miners.b, miners.b_url)
    with gateway([dataclasses.replace(rec_b, url=miners.a_url)]) as gw:
        with pytest.raises(Exception) as info:
            sdk(gw.url, gw.key, E2EETransport(policy=DEV)).chat.completions.create(
                model=MODEL, messages=MSG)
        assert cause(info.value).failures[0].reason == "instance_id_mismatch"
        assert gw.log.count("/e2e/invoke") == 0


def test_relabelled_evidence_fails_the_id_derivation(miners: Miners) -> None:
    """A router that also rewrites the answer's instance_id to the one asked for."""
    rec_b = miner_record(miners.b, miners.b_url)
    target = miners.b.instance_id
    with gateway([dataclasses.replace(rec_b, url=miners.a_url)]) as gw:
        router = Rewriter("/e2e/attest/", lambda a: {**a, "instance_id": target,
                                                     "e2e_pubkey": miners.b.e2e_pubkey})
        with pytest.raises(Exception) as info:
            sdk(gw.url, gw.key, E2EETransport(inner=router, policy=DEV)).chat.completions.create(
                model=MODEL, messages=MSG)
        # B's key with A's quote: the report_data binds A's key, not B's
        assert cause(info.value).failures[0].reason == "binding_mismatch"
        assert "/e2e/invoke" not in router.paths
        router2 = Rewriter("/e2e/attest/", lambda a: {**a, "instance_id": target})
        with pytest.raises(Exception) as info:
            sdk(gw.url, gw.key, E2EETransport(inner=router2, policy=DEV)).chat.completions.create(
                model=MODEL, messages=MSG)
        assert cause(info.value).failures[0].reason == "instance_id_not_derived"
        assert "/e2e/invoke" not in router2.paths


def test_replayed_evidence_for_another_nonce_is_refused(miners: Miners) -> None:
    with gateway([miner_record(miners.a, miners.a_url)]) as gw:
        first = httpx.post(f"{gw.url}/e2e/attest/{miners.a.instance_id}",
                           json={"nonce": "00" * 32},
                           headers={"Authorization": f"Bearer {gw.key}"}).json()
        replay = Rewriter("/e2e/attest/", lambda _a: first)
        with pytest.raises(Exception) as info:
            sdk(gw.url, gw.key, E2EETransport(inner=replay, policy=DEV)).chat.completions.create(
                model=MODEL, messages=MSG)
        assert cause(info.value).failures[0].reason in ("gpu_nonce_mismatch", "binding_mismatch")
        assert "/e2e/invoke" not in replay.paths


def test_a_swapped_workload_manifest_is_refused(miners: Miners) -> None:
    """A relay that claims another model revision than the one measured into RTMR3."""
    def swap(answer: dict) -> dict:
        answer["workload_manifest"] = {**answer["workload_manifest"], "model_revision": "other"}
        return answer

    with gateway([miner_record(miners.a, miners.a_url)]) as gw:
        router = Rewriter("/e2e/attest/", swap)
        with pytest.raises(Exception) as info:
            sdk(gw.url, gw.key, E2EETransport(inner=router, policy=DEV)).chat.completions.create(
                model=MODEL, messages=MSG)
        assert cause(info.value).failures[0].reason == "manifest_not_measured"
        assert "/e2e/invoke" not in router.paths


def test_simulated_evidence_is_refused_without_the_explicit_opt_in(miners: Miners) -> None:
    with gateway([miner_record(miners.a, miners.a_url)]) as gw:
        with pytest.raises(Exception) as info:
            sdk(gw.url, gw.key, E2EETransport()).chat.completions.create(model=MODEL,
                                                                          messages=MSG)
        assert cause(info.value).failures[0].reason == "simulated_tee"
        assert gw.log.count("/e2e/invoke") == 0


def test_a_relay_timeout_is_a_typed_failure_naming_the_instance() -> None:
    kp = KeyPair.generate()
    with UvicornThread(vector_miner_app(kp, MODEL, attest_delay=3.0)) as slow, \
            gateway([vector_record(kp, slow.url, MODEL)], attest_timeout=0.3) as gw:
        with pytest.raises(Exception) as info:
            sdk(gw.url, gw.key, E2EETransport(policy=DEV)).chat.completions.create(
                model=MODEL, messages=MSG)
        failure = cause(info.value).failures[0]
        assert failure.reason == "relay_error" and "attest_timeout" in str(failure)
        assert failure.instance_id == instance_id_for_key(kp.public_bytes)


def test_challenge_rate_limit_is_a_clear_429(miners: Miners) -> None:
    with gateway([miner_record(miners.a, miners.a_url)], attest_rate=0.01, attest_burst=1) as gw:
        auth = {"Authorization": f"Bearer {gw.key}"}
        url = f"{gw.url}/e2e/attest/{miners.a.instance_id}"
        assert httpx.post(url, json={"nonce": "11" * 32}, headers=auth).status_code == 200
        second = httpx.post(url, json={"nonce": "22" * 32}, headers=auth)
        assert second.status_code == 429 and second.json()["reason"] == "attest_rate_limited"
        assert int(second.headers["retry-after"]) >= 1
        with pytest.raises(Exception) as info:
            sdk(gw.url, gw.key, E2EETransport(policy=DEV)).chat.completions.create(
                model=MODEL, messages=MSG)
        assert isinstance(cause(info.value), AttestationRateLimited)
        assert gw.log.count("/e2e/invoke") == 0


@pytest.mark.parametrize("body,status,reason", [
    ({"nonce": "ab"}, 400, "bad_request"),
    ({"nonce": "11" * 32, "extra": 1}, 400, "bad_request"),
])
def test_relay_refuses_bad_challenges(miners: Miners, body: dict, status: int,
                                      reason: str) -> None:
    with gateway([miner_record(miners.a, miners.a_url)]) as gw:
        auth = {"Authorization": f"Bearer {gw.key}"}
        r = httpx.post(f"{gw.url}/e2e/attest/{miners.a.instance_id}", json=body, headers=auth)
        assert (r.status_code, r.json()["reason"]) == (status, reason)
        r = httpx.post(f"{gw.url}/e2e/attest/{'f' * 32}", json={"nonce": "11" * 32},
                       headers=auth)
        assert (r.status_code, r.json()["reason"]) == (404, "unknown_instance")
        r = httpx.post(f"{gw.url}/e2e/attest/{miners.a.instance_id}", json={"nonce": "11" * 32})
        assert r.status_code == 401
        assert gw.log.count("/e2e/invoke") == 0


@pytest.mark.parametrize("rewrite", ["versions_1", "versions_omitted"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_downgrade_by_a_router_is_refused(miners: Miners, rewrite: str, mode: str) -> None:
    """Today's main falls back to v1 here; the default client now refuses."""
    def edit(body: dict) -> dict:
        for inst in body["instances"]:
            if rewrite == "versions_1":
                inst["e2e_versions"] = [1]
            else:
                inst.pop("e2e_versions", None)
        return body

    with gateway([miner_record(miners.a, miners.a_url)]) as gw:
        router = Rewriter("/e2e/instances/", edit)
        payload = {"model": MODEL, "messages": MSG}
        with pytest.raises(DowngradeError, match=r"v1 needs an explicit opt-in"):
            if mode == "sync":
                with httpx.Client(transport=E2EETransport(gw.key, inner=router,
                                                          policy=DEV)) as http:
                    http.post(gw.url + "/v1/chat/completions", json=payload)
            else:
                async def go() -> None:
                    t = AsyncE2EETransport(gw.key, inner=router, policy=DEV)
                    async with httpx.AsyncClient(transport=t) as http:
                        await http.post(gw.url + "/v1/chat/completions", json=payload)
                asyncio.run(go())
        assert "/e2e/invoke" not in router.paths and gw.log.count("/e2e/invoke") == 0


def test_cli_verify_prints_the_verdict_tree(miners: Miners, capsys: pytest.CaptureFixture[str]) -> None:
    from chutes_subnet.cli import main

    with gateway([miner_record(miners.a, miners.a_url)]) as gw:
        base = ["verify", "--model", MODEL, "--gateway", gw.url, "--api-key", gw.key]
        assert main([*base, "--dangerous-accept-simulated-tee", "--dev-gpus", "1"]) == 0
        out = capsys.readouterr().out
        assert f"instance {miners.a.instance_id}: VERIFIED" in out
        for branch in ("quote", "tcb", "measurements", "gpu", "binding", "manifest"):
            assert f"  {branch}" in out
        assert "SIMULATED" in out and f"workload {MODEL}@" in out
        assert main(base) == 1  # the packaged policy refuses simulated evidence
        assert "simulated_tee" in capsys.readouterr().out
        assert gw.log.count("/e2e/invoke") == 0


def test_cli_verify_catches_an_unattested_key(miners: Miners,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from chutes_subnet.cli import main

    lying = dataclasses.replace(miner_record(miners.a, miners.a_url),
                                e2e_pubkey=KeyPair.generate().public_b64)
    with gateway([lying], compromised=True) as gw:
        rc = main(["verify", "--model", MODEL, "--gateway", gw.url, "--api-key", gw.key,
                   "--dangerous-accept-simulated-tee", "--dev-gpus", "1", "--json"])
        doc = json.loads(capsys.readouterr().out)
        assert rc == 1
        assert doc["instances"][0]["reasons"][0]["code"] == "key_mismatch"


def test_real_quote_and_gpus_with_collateral_from_the_gateway_cache() -> None:
    """Real DCAP + 8 real H100 chains through the relay; collateral served by the
    gateway (no PCCS on the client). Everything verifies except what the public
    vector cannot have: a workload event in RTMR3, and report_data binding our nonce."""
    kp = KeyPair.generate()
    profile = MeasurementProfile("public-vector-h100x8",
                                 parse_quote(vector_quote()).report.measurements, "H100", 8)
    policy = ClientPolicy(Policy.default().with_profiles(profile))
    with UvicornThread(vector_miner_app(kp, MODEL)) as m, \
            gateway([vector_record(kp, m.url, MODEL)],
                    collateral=StaticCollateral(vector_collateral_text())) as gw:
        verifier = InstanceVerifier(policy, clock=lambda: VECTOR_NOW,
                                    nonce_source=vector_gpu_nonce)
        [verdict] = verify_model(gw.url, gw.key, MODEL, policy=policy,
                                 verifier=verifier)
        assert verdict.reasons and [r.code for r in verdict.reasons] == VECTOR_REASONS
        a = verdict.attestation
        assert a is not None and (a.tcb_status, a.gpu_count, a.gpu_model, a.profile) == \
            ("UpToDate", 8, "H100", "public-vector-h100x8")
        assert gw.log.count("/e2e/collateral") == 1
        verifier.pins.forget(verdict.instance_id)
        [again] = verify_model(gw.url, gw.key, MODEL, policy=policy, verifier=verifier)
        assert [r.code for r in again.reasons] == VECTOR_REASONS
        assert gw.log.count("/e2e/collateral") == 1  # platform collateral cached on the client
        assert gw.log.count("/e2e/attest/") == 2


@pytest.mark.parametrize("served", ["none", "expired"])
def test_without_valid_collateral_a_real_quote_fails_closed(served: str) -> None:
    """No collateral at the gateway, or collateral outside its window at the client's
    time (the stored vector's collateral today): refused, nothing sent."""
    kp = KeyPair.generate()
    collateral = StaticCollateral(vector_collateral_text()) if served == "expired" else None
    with UvicornThread(vector_miner_app(kp, MODEL)) as m, \
            gateway([vector_record(kp, m.url, MODEL)], collateral=collateral) as gw:
        clock = (lambda: VECTOR_NOW) if served == "none" else time.time
        verifier = InstanceVerifier(ClientPolicy.default(), clock=clock)
        [verdict] = verify_model(gw.url, gw.key, MODEL, verifier=verifier)
        assert [r.code for r in verdict.reasons] == ["collateral_unavailable"]
        assert gw.log.count("/e2e/collateral") == 1  # asked; 404 (none served) or unusable
        assert gw.log.count("/e2e/invoke") == 0
