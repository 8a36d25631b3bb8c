"""The validator's attestor: miner answers checked before the verifier, the key cache's TTL
and re-challenges (against a real miner app in-process)."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.chain import Neuron
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.validator import Attestor, EvaluationFailure
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.validator_fixtures import bench_wallet

KEY = KeyPair.generate()
MODEL = "some/model"


def _hotkey() -> str:
    from chutes_subnet.wallets import hotkey_ss58

    return hotkey_ss58(bench_wallet())


def _attest_app(answer: dict | bytes, status: int = 200):
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


GOOD = {"instance_id": KEY.instance_id, "chute_id": chute_id_for_model(MODEL), "model": MODEL,
        "hotkey": "x", "e2e_pubkey": KEY.public_b64, "tdx_quote": "AAAA",
        "receipt_pubkey": base64.b64encode(bytes(range(32))).decode()}


@pytest.mark.parametrize("answer,status,reason,needle", [
    (b"not json", 200, "bad_response", "not an AttestResponse"),
    ({**GOOD, "chute_id": "other"}, 200, "bad_response", "chute_id"),
    ({**GOOD, "e2e_pubkey": base64.b64encode(b"short").decode()}, 200, "bad_response",
     "ML-KEM"),
    ({**GOOD, "instance_id": "chosen-by-the-miner"}, 200, "bad_response", "not derived"),
    ({**GOOD, "instance_id": KeyPair.generate().instance_id}, 200, "bad_response",
     "instance_id is not derived from e2e_pubkey"),
    ({k: v for k, v in GOOD.items() if k != "receipt_pubkey"}, 200, "bad_response",
     "receipt_pubkey"),  # no attested receipt key: could never be billed
    ({**GOOD, "receipt_pubkey": base64.b64encode(bytes(31)).decode()}, 200, "bad_response",
     "receipt_pubkey"),
    ({**GOOD, "tdx_quote": "!!"}, 200, "attestation:malformed_evidence", "malformed"),
    ({**GOOD, "tdx_quote": base64.b64encode(b"\x04\x00" + bytes(60)).decode()}, 200,
     "attestation:tee_type_not_tdx", "not TDX"),
    (GOOD, 503, "bad_response", "HTTP 503"),
])
async def test_attest_answers_are_checked(answer, status, reason, needle):
    transport = httpx.ASGITransport(app=_attest_app(answer, status))
    async with httpx.AsyncClient(transport=transport) as c:
        attestor = Attestor(Verifier(Policy.development(), dangerous_accept_simulated_tee=True),
                            bench_wallet(), c, ttl=60, rechallenge_probability=0)
        neuron = Neuron(1, _hotkey(), "c", False, 0.0, "127.0.0.1:9")
        with pytest.raises(EvaluationFailure) as info:
            await attestor.ensure(neuron)
    assert info.value.reason == reason, info.value.detail
    assert needle in info.value.detail
    assert attestor.cached(1) is None


# --- the key cache, against a real miner app (in-process, no gate) -------------------------


async def test_attestation_cache_ttl_and_rechallenge():
    from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
    from chutes_subnet.inference import make_backend
    from tests.validator_fixtures import MinerConfig, create_miner_app

    hotkey = _hotkey()
    app = create_miner_app(MinerConfig(tee="simulated"), hotkey_ss58=hotkey,
                           backend=make_backend("embedded"), provider=SimulatedProvider(),
                           gate=None)

    t0 = float(int(time.time()))
    now = [t0]
    verifier = Verifier(Policy.development(), dangerous_accept_simulated_tee=True)
    neuron = Neuron(1, hotkey, "c", False, 0.0, "127.0.0.1:9")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://m") as client:
        never = Attestor(verifier, bench_wallet(), client, ttl=60, rechallenge_probability=0.0,
                         clock=lambda: now[0])
        first, cached = await never.ensure(neuron)
        assert not cached and first.summary.ok and first.summary.simulated
        assert first.summary.expires_at == t0 + 60
        again, cached = await never.ensure(neuron)
        assert cached and again is first
        now[0] = t0 + 61                                  # TTL over: challenge again
        renewed, cached = await never.ensure(neuron)
        assert not cached and renewed.summary.verified_at == t0 + 61
        moved = Neuron(1, hotkey, "c", False, 0.0, "127.0.0.1:10")
        assert (await never.ensure(moved))[1] is False    # new endpoint: challenge again
        always = Attestor(verifier, bench_wallet(), client, ttl=60, rechallenge_probability=1.0,
                          clock=lambda: now[0])
        await always.ensure(neuron)
        assert (await always.ensure(neuron))[1] is False
        other = Neuron(1, "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "c", False, 0.0,
                       "127.0.0.1:9")
        with pytest.raises(EvaluationFailure) as info:  # a new hotkey at the uid: re-bound
            await never.ensure(other)
        assert info.value.reason == "attestation:binding_mismatch"
