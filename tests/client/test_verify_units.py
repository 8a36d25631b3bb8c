"""The client's pure verification step, check_instance: real vectors and simulated
evidence, one reason per identity or binding failure, never an exception on peer bytes,
collateral outside its window refused."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.policy import MeasurementProfile, Policy
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.client.client_policy import ClientPolicy
from chutes_subnet.client.pins import CollateralCache
from chutes_subnet.client.verify import ClientVerdict, check_instance
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.errors import CollateralError
from chutes_subnet.instance_id import instance_id_for_key
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.client_fixtures import (
    VECTOR_NOW,
    VECTOR_REASONS,
    vector_collateral_text,
    vector_gpu_nonce,
    vector_gpus,
    vector_quote,
)

HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
MODEL = "test/units"
DEV = ClientPolicy.development(gpu_count=2, dangerous_accept_simulated_tee=True)
FUZZ_KEY = KeyPair.generate()
RECEIPT_KEY = bytes(range(32))


def dev_verifier() -> Verifier:
    return Verifier(DEV.attestation, None, dangerous_accept_simulated_tee=True)


def answer_for(kp: KeyPair, nonce: bytes, **over: object) -> dict:
    ev = SimulatedProvider(gpu_count=2).collect(nonce, kp.public_bytes, HOTKEY,
                                                RECEIPT_KEY).to_wire()
    base = {"instance_id": instance_id_for_key(kp.public_bytes),
            "chute_id": chute_id_for_model(MODEL), "model": MODEL, "hotkey": HOTKEY,
            "e2e_pubkey": kp.public_b64, "e2e_versions": [1, 2],
            "receipt_pubkey": base64.b64encode(RECEIPT_KEY).decode(), **ev}
    base.update(over)
    return base


@pytest.fixture(scope="module")
def kp() -> KeyPair:
    return KeyPair.generate()


def check(kp: KeyPair, answer: dict | bytes, nonce: bytes, **kw: object) -> ClientVerdict:
    raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
    iid = kw.pop("instance_id", instance_id_for_key(kp.public_bytes))
    return check_instance(dev_verifier(), instance_id=iid,  # type: ignore[arg-type]
                          offered_pubkey=kw.pop("offered", kp.public_bytes),  # type: ignore[arg-type]
                          nonce=nonce, answer=raw, now=int(time.time()), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("receipt_key,codes", [
    (base64.b64encode(bytes(32)).decode(), ["binding_mismatch"]),  # not the key bound in the quote
    (None, ["binding_mismatch", "no_receipt_key"]),                 # dropped: v1 layout expected
])
def test_a_relayed_answer_with_another_receipt_key_is_refused(kp, receipt_key, codes) -> None:
    nonce = os.urandom(32)
    v = check(kp, answer_for(kp, nonce, receipt_pubkey=receipt_key), nonce)
    assert [r.code for r in v.reasons] == codes and v.receipt_pubkey is None


def test_simulated_evidence_passes_with_the_dev_policy_and_names_every_branch(kp) -> None:
    nonce = os.urandom(32)
    v = check(kp, answer_for(kp, nonce), nonce, chute_id=chute_id_for_model(MODEL))
    assert v.ok and v.e2e_pubkey == kp.public_bytes and v.attestation and v.attestation.simulated
    assert v.receipt_pubkey == RECEIPT_KEY  # receipts verify under the key seen attested
    tree = "\n".join(v.tree())
    for branch in ("quote", "tcb", "measurements", "gpu", "binding", "manifest", "SIMULATED"):
        assert branch in tree
    assert "NOT established" not in tree and v.to_dict()["ok"] is True


@pytest.mark.parametrize("case,code", [
    ("other_id", "instance_id_mismatch"),
    ("id_not_derived", "instance_id_not_derived"),
    ("listed_other_key", "key_mismatch"),
    ("other_chute", "chute_mismatch"),
    ("v1_only", "no_v2"),
    ("other_nonce", "gpu_nonce_mismatch"),
    ("other_hotkey", "binding_mismatch"),
])
def test_each_identity_and_binding_failure_has_its_reason(kp, case: str, code: str) -> None:
    nonce = os.urandom(32)
    ans, kw = answer_for(kp, nonce), {}
    other = KeyPair.generate()
    if case == "other_id":
        ans["instance_id"] = instance_id_for_key(other.public_bytes)
    elif case == "id_not_derived":
        kw["instance_id"] = ans["instance_id"] = "f" * 32
    elif case == "listed_other_key":
        kw["offered"] = other.public_bytes
    elif case == "other_chute":
        kw["chute_id"] = chute_id_for_model("a/bigger-model")
    elif case == "v1_only":
        ans["e2e_versions"] = [1]
    elif case == "other_nonce":
        ans = answer_for(kp, os.urandom(32))
    elif case == "other_hotkey":
        ans["hotkey"] = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    v = check(kp, ans, nonce, **kw)
    assert not v.ok and v.reasons[0].code == code and v.e2e_pubkey is None
    err = v.error()
    assert err.reason == code and err.instance_id in str(err)


@pytest.mark.parametrize("raw", [
    b"", b"not json", b"[]", b'{"instance_id": 1}', b"{" * 100_000,
    json.dumps({"instance_id": "x", "chute_id": "c", "model": "m", "hotkey": "h",
                "e2e_pubkey": "AAAA", "tdx_quote": "AAAA"}).encode(),
    b" " * (1024 * 1024 + 1),
])
def test_malformed_answers_are_refused_with_one_reason(kp, raw: bytes) -> None:
    v = check(kp, raw, os.urandom(32))
    assert [r.code for r in v.reasons] == ["malformed_answer"]


@given(st.binary(max_size=2048))
def test_check_instance_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    assert not check(FUZZ_KEY, raw, bytes(32)).ok


@given(st.dictionaries(st.sampled_from(["instance_id", "chute_id", "model", "hotkey",
                                        "e2e_pubkey", "tdx_quote", "gpu_evidence",
                                        "simulated", "e2e_versions"]),
                       st.one_of(st.text(max_size=40), st.integers(), st.none(),
                                 st.lists(st.integers(), max_size=3))))
def test_check_instance_never_raises_on_arbitrary_answers(d: dict) -> None:
    assert not check_instance(dev_verifier(), instance_id="a" * 32, offered_pubkey=b"k" * 1184,
                              nonce=bytes(32), answer=json.dumps(d).encode(),
                              now=int(time.time())).ok


def test_real_tdx_quote_and_8_gpus_pass_everything_but_the_binding() -> None:
    kp = KeyPair.generate()
    quote = vector_quote()
    profile = MeasurementProfile("vec", parse_quote(quote).report.measurements, "H100", 8)
    cache = CollateralCache()
    cache.put(quote, vector_collateral_text(), VECTOR_NOW)
    verifier = Verifier(Policy.default().with_profiles(profile), cache)
    ans = {"instance_id": instance_id_for_key(kp.public_bytes), "model": MODEL,
           "chute_id": chute_id_for_model(MODEL), "hotkey": HOTKEY, "e2e_pubkey": kp.public_b64,
           "tdx_quote": base64.b64encode(quote).decode(),
           "receipt_pubkey": base64.b64encode(RECEIPT_KEY).decode(),
           "gpu_evidence": vector_gpus(), "e2e_versions": [2]}
    v = check_instance(verifier, instance_id=ans["instance_id"], offered_pubkey=kp.public_bytes,
                       nonce=vector_gpu_nonce(), answer=json.dumps(ans).encode(), now=VECTOR_NOW)
    assert [r.code for r in v.reasons] == VECTOR_REASONS
    assert (v.attestation.tcb_status, v.attestation.gpu_count) == ("UpToDate", 8)  # type: ignore[union-attr]
    assert v.measurements == profile.measurements
    # the same inputs at today's time: the stored collateral has expired
    with pytest.raises(CollateralError):
        cache.put(quote, vector_collateral_text(), int(time.time()))
    assert cache.has(quote, VECTOR_NOW) and not cache.has(quote, int(time.time()))
    late = check_instance(verifier, instance_id=ans["instance_id"], offered_pubkey=kp.public_bytes,
                          nonce=vector_gpu_nonce(), answer=json.dumps(ans).encode(),
                          now=int(time.time()))
    assert late.reasons[0].code == "collateral_unavailable"
