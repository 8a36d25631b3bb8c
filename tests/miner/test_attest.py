"""``POST /attest`` on a real miner (uvicorn, simulated TEE, btauth/1 gate): evidence the
verifier accepts and binds, and every caller refusal."""

from __future__ import annotations

import base64
import json

import httpx

from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.auth import sign_headers
from chutes_subnet.instance_id import instance_id_for_key
from chutes_subnet.wallets import hotkey_ss58
from tests.miner_fixtures import Env


def test_attest_round_trip_is_accepted_by_the_dev_mode_verifier(env: Env) -> None:
    nonce = bytes(range(32))
    r = env.post("/attest", json.dumps({"nonce": nonce.hex()}).encode(),
                 {"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["instance_id"] == instance_id_for_key(base64.b64decode(body["e2e_pubkey"])) and body["chute_id"] == env.inst.chute_id
    assert body["hotkey"] == env.miner_hotkey and body["simulated"] is True
    assert body["e2e_pubkey"] == env.inst.e2e_pubkey
    verifier = Verifier(Policy.development(gpu_count=1), dangerous_accept_simulated_tee=True)
    evidence = Evidence.from_wire(body)
    pk = base64.b64decode(body["e2e_pubkey"])
    rk = base64.b64decode(body["receipt_pubkey"])  # report_data layout v2 binds it too
    assert len(rk) == 32
    verdict = verifier.verify(evidence, nonce=nonce, e2e_pubkey=pk, hotkey_ss58=body["hotkey"],
                              chute_id=body["chute_id"], receipt_pubkey=rk)
    assert verdict.ok and verdict.simulated, verdict.reasons
    assert verdict.manifest_sha384 is not None  # the embedded model's manifest is in RTMR3
    other = verifier.verify(evidence, nonce=nonce, e2e_pubkey=pk,
                            hotkey_ss58=hotkey_ss58(env.wallets["validator"]), receipt_pubkey=rk)
    assert not other.ok and "binding_mismatch" in {str(r.code) for r in other.reasons}
    for receipt_key in (None, bytes(32)):  # receipt key dropped or swapped: not this binding
        swapped = verifier.verify(evidence, nonce=nonce, e2e_pubkey=pk,
                                  hotkey_ss58=body["hotkey"], receipt_pubkey=receipt_key)
        assert "binding_mismatch" in {str(r.code) for r in swapped.reasons}


def test_attest_refusals(env: Env) -> None:
    good = json.dumps({"nonce": "ab" * 32}).encode()
    unsigned = env.post("/attest", good, signer=None)
    assert unsigned.status_code == 401 and unsigned.json()["reason"] == "unauthenticated"
    headers = sign_headers(env.wallets["validator"], method="POST", path="/attest", body=good,
                           receiver_ss58=env.miner_hotkey)
    tampered = httpx.post(env.url + "/attest", content=good.replace(b"ab", b"cd", 1),
                          headers=headers)
    assert tampered.status_code == 401 and "bad_signature" in tampered.json()["error"]
    wrong_receiver = sign_headers(env.wallets["validator"], method="POST", path="/attest",
                                  body=good, receiver_ss58=hotkey_ss58(env.wallets["stranger"]))
    r = httpx.post(env.url + "/attest", content=good, headers=wrong_receiver)
    assert r.status_code == 401 and "wrong_receiver" in r.json()["error"]
    assert httpx.post(env.url + "/attest", content=good, headers=headers).status_code == 200
    replay = httpx.post(env.url + "/attest", content=good, headers=headers)
    assert replay.status_code == 401 and "replayed" in replay.json()["error"]
    for who, why in (("nopermit", "validator permit"), ("weak", "stake"),
                     ("stranger", "not registered")):
        r = env.post("/attest", good, signer=who)
        assert r.status_code == 403 and why in r.json()["error"], (who, r.text)
    assert env.post("/attest", b'{"nonce": "xyz"}').status_code == 400
    big = b'{"nonce": "' + b"a" * 5000 + b'"}'
    assert env.post("/attest", big).status_code == 413
