"""One attested key, one uid (DESIGN B1, issue 11 item 1).

The attack this closes: a miner copies an honest miner's instance id (it is on the
honest miner's public ``/health``) and serves under it. Before B1 the validator
published the copy over the honest record, the gateway routed the honest miner's
traffic to the thief, both uids were credited with the honest instance's organic
tokens, and when the thief then failed a round the validator deleted the honest
record. Here the same attack runs against real miners, a real validator round and a
real gateway on loopback, and none of it works.
"""

from __future__ import annotations

import base64
import dataclasses

import httpx
import pytest

from chutes_subnet.auth import forward_signer
from chutes_subnet.e2ee import KeyPair, RequestContext, v2
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.validator import BenchmarkConfig, Validator, ValidatorConfig, ValidatorState
from chutes_subnet.validator.identity import DUPLICATE_REASON, refuse_duplicate_keys
from chutes_subnet.validator.organic import GatewayOrganicSource
from chutes_subnet.validator.results import AttestationSummary, MinerResult
from tests import validator_fixtures as vf
from tests.reliability_harness import miner_counter
from tests.servers import UvicornThread, free_port

PATH = "/v1/chat/completions"


def _validator(subnet: vf.Subnet, tmp_path, registry) -> Validator:
    cfg = ValidatorConfig(concurrency=4, timeout=5.0, rechallenge_probability=0.0,
                          dangerous_accept_simulated_tee=True,
                          benchmark=BenchmarkConfig(prompts_per_miner=1, max_tokens=8,
                                                    verify_sample=1))
    return Validator(cfg, chain=subnet.chain, wallet=subnet.validator_wallet,
                     verifier=vf.dev_verifier(), state=ValidatorState(tmp_path / "v.sqlite"),
                     registry=registry)


async def _invoke(http: httpx.AsyncClient, gw: str, secret: str, chute: str) -> httpx.Response:
    """One sealed v2 request through the gateway to whatever instance it offers."""
    auth = {"Authorization": f"Bearer {secret}"}
    listed = (await http.get(f"{gw}/e2e/instances/{chute}", headers=auth)).json()
    inst = listed["instances"][0]
    nonce = inst["nonces"][0]
    ctx = RequestContext(chute, inst["instance_id"], nonce, PATH, False)
    body, _ = v2.seal_request(base64.b64decode(inst["e2e_pubkey"]), ctx,
                              {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    headers = {**auth, "X-Chute-Id": chute, "X-Instance-Id": inst["instance_id"],
               "X-E2E-Nonce": nonce, "X-E2E-Stream": "false", "X-E2E-Path": PATH,
               "X-E2E-Version": "2", "Content-Type": "application/octet-stream"}
    return await http.post(f"{gw}/e2e/invoke", headers=headers, content=body)


async def _invokes_served(http: httpx.AsyncClient, url: str) -> float:
    return miner_counter((await http.get(url + "/metrics")).text, "chutes_miner_requests",
                         route="invoke", status="200")


@pytest.fixture
def pair(tmp_path):
    with vf.local_subnet(tmp_path, {"honest": None, "thief": None}) as subnet:
        yield subnet


SHARED = KeyPair.generate()


@pytest.fixture
def twins(tmp_path):
    with vf.local_subnet(tmp_path, {"honest": None, "twin": None},
                         keypairs={"honest": SHARED, "twin": SHARED}) as subnet:
        yield subnet


async def test_copying_an_honest_instance_id_takes_over_nothing(pair, tmp_path) -> None:
    subnet = pair
    honest, thief = subnet.by_name("honest"), subnet.by_name("thief")
    http = httpx.AsyncClient(timeout=30)
    honest_id = (await http.get(honest.server.url + "/health")).json()["instance_id"]
    # the thief serves under the honest id (its config can no longer choose one,
    # so it plays a modified miner that rewrites its public identity)
    thief.state.instance = dataclasses.replace(thief.state.instance, instance_id=honest_id)
    assert (await http.get(thief.server.url + "/health")).json()["instance_id"] == honest_id

    registry = MemoryInstanceRegistry()
    keys, usage = MemoryApiKeyStore(), MemoryUsageMeter()
    secret, _ = keys.create("app")
    gw_app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                        keys=keys, usage=usage,
                        forward_signer=forward_signer(subnet.validator_wallet))
    validator = _validator(subnet, tmp_path, registry)
    try:
        first = await validator.run_round()
        stolen = first.result_for(thief.uid)
        assert stolen is not None and stolen.reason == "bad_response"
        assert "instance_id is not derived from e2e_pubkey" in stolen.detail_text
        assert first.result_for(honest.uid).ok

        # no takeover: the record is the honest miner's, and only it is published
        rec = registry.get(honest_id)
        assert rec is not None and rec.hotkey == honest.hotkey and rec.uid == honest.uid
        assert rec.url == honest.server.url
        assert validator.published() == {honest.uid: honest_id}

        # the traffic reaches the honest miner, and only it is credited
        with UvicornThread(gw_app) as gw:
            before = [await _invokes_served(http, m.server.url) for m in (honest, thief)]
            for _ in range(2):
                assert (await _invoke(http, gw.url, secret, rec.chute_id)).status_code == 200
            assert await _invokes_served(http, honest.server.url) == before[0] + 2
            assert await _invokes_served(http, thief.server.url) == before[1]
            organic = GatewayOrganicSource(gw_app.state.gateway, validator.published)
            credit = organic.served_tokens()
            assert set(credit) == {honest.uid} and credit[honest.uid] > 0

        # the thief fails the next round: the honest record stays
        thief.server.stop()
        second = await validator.run_round()
        assert second.result_for(thief.uid).reason == "unreachable"
        kept = registry.get(honest_id)
        assert kept is not None and (kept.hotkey, kept.url) == (honest.hotkey, honest.server.url)
        assert [r.instance_id for r in registry.list_verified()] == [honest_id]
        assert thief.uid not in second.weights and second.weights.get(honest.uid)
    finally:
        await validator.aclose()
        await http.aclose()


async def test_one_key_behind_two_hotkeys_earns_for_the_incumbent_only(twins, tmp_path) -> None:
    subnet, shared = twins, SHARED
    honest, twin = subnet.by_name("honest"), subnet.by_name("twin")
    # round 1: the twin is not reachable yet, the honest miner registers the key
    await subnet.chain.serve_axon(twin.hotkey, "127.0.0.1", free_port())
    registry = MemoryInstanceRegistry()
    validator = _validator(subnet, tmp_path, registry)
    try:
        first = await validator.run_round()
        assert first.result_for(honest.uid).ok
        assert validator.published() == {honest.uid: shared.instance_id}

        # round 2: the twin answers with the same key: it decrypts, so it passes the
        # benchmark, but the key is held by another uid
        await subnet.chain.serve_axon(twin.hotkey, "127.0.0.1", twin.server.port)
        second = await validator.run_round()
        refused = second.result_for(twin.uid)
        assert refused.attested and refused.successes == refused.requests == 1
        assert refused.reason == DUPLICATE_REASON
        assert "is held by another uid" in refused.detail_text
        assert second.result_for(honest.uid).ok
        assert twin.uid not in second.weights and second.weights.get(honest.uid)
        assert validator.published() == {honest.uid: shared.instance_id}
        rec = registry.get(shared.instance_id)
        assert rec is not None and rec.hotkey == honest.hotkey
    finally:
        await validator.aclose()


# --- the pure rule ------------------------------------------------------------------

def _ok(uid: int, iid: str | None) -> MinerResult:
    summary = AttestationSummary(True, iid, "c", "m", "k", True, None, None, None, 0, (), 0, 1)
    return MinerResult(uid, f"hk{uid}", "ck", "1.2.3.4:1", True, attestation=summary,
                       requests=1, successes=1)


@pytest.mark.parametrize("holder,kept", [
    (None, set()),            # ambiguous: two uids at once and no holder -> nobody
    ("hk1", {1}),             # the incumbent keeps it
    ("hk9", set()),           # held by a third hotkey -> both refused
])
def test_shared_ids_are_credited_to_the_holder_only(holder: str | None, kept: set[int]) -> None:
    results = [_ok(1, "aa"), _ok(2, "aa"), _ok(3, "bb")]
    out = refuse_duplicate_keys(results, lambda iid: holder if iid == "aa" else None)
    assert {r.uid for r in out if r.ok} == kept | {3}
    for r in out:
        if not r.ok:
            assert r.reason == DUPLICATE_REASON and r.detail_text.startswith("instance aa")


def test_a_lone_claimant_of_someone_elses_id_is_refused() -> None:
    out = refuse_duplicate_keys([_ok(2, "aa")], lambda iid: "hk1")
    assert out[0].reason == DUPLICATE_REASON
    assert refuse_duplicate_keys([_ok(1, "aa")], lambda iid: "hk1")[0].ok
    failed = dataclasses.replace(_ok(2, "aa"), reason="timeout")
    assert refuse_duplicate_keys([failed, _ok(1, "aa")], lambda iid: None)[1].ok
