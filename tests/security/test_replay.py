"""Replay of every signed or nonce-carrying request type, on the real stack.

| request                         | replayed how                         | refused by        |
|---------------------------------|--------------------------------------|-------------------|
| btauth/1 ``POST /attest``       | same signed bytes again              | miner 401         |
| btauth/1 ``POST /e2e/invoke``   | same signed bytes again              | miner 401         |
| invoke, same gateway nonce      | re-signed, same nonce                | miner 409         |
| v1 envelope, fresh nonce        | same ciphertext, new nonce + sig     | miner 409         |
| v2 envelope, fresh nonce        | same ciphertext, new nonce + sig     | miner 400 (AAD)   |
| gateway invoke, same nonce      | same body and nonce through gateway  | gateway 409       |
| gateway nonce of another key    | nonce presented by a second API key  | gateway 403       |
| attestation challenge nonce     | same evidence verified twice         | Verifier verdict  |

plus a deregistered validator (was accepted, then left the metagraph) -> 403.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest

from chutes_subnet.attestation.verify.challenges import ChallengeBook
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.wallets import hotkey_ss58
from tests.security_fixtures import Stack, seal_invoke, security_stack

PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "replay me"}],
           "max_tokens": 4}
_n = iter(range(1, 10**9))


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with security_stack(str(tmp_path_factory.mktemp("wallets"))) as s:
        yield s


def _nonce() -> str:
    return f"{next(_n):032x}"


def _invoke(s: Stack, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.post(s.miner_url + "/e2e/invoke", content=body, headers=headers, timeout=30)


def _signed_invoke(s: Stack, version: int, nonce: str) -> tuple[dict[str, str], bytes]:
    headers, blob, _ = seal_invoke(s.inst, PAYLOAD, version=version, nonce=nonce)
    return {**headers, **s.sign("validator", "/e2e/invoke", blob)}, blob


def test_signed_attest_request_is_accepted_once(stack: Stack) -> None:
    body = json.dumps({"nonce": "cd" * 32}).encode()
    headers = {**stack.sign("validator", "/attest", body), "Content-Type": "application/json"}
    first = httpx.post(stack.miner_url + "/attest", content=body, headers=headers, timeout=30)
    again = httpx.post(stack.miner_url + "/attest", content=body, headers=headers, timeout=30)
    assert first.status_code == 200
    assert again.status_code == 401 and "replayed" in again.json()["error"]


@pytest.mark.parametrize("version", [1, 2])
def test_signed_invoke_is_accepted_once(stack: Stack, version: int) -> None:
    headers, blob = _signed_invoke(stack, version, _nonce())
    assert _invoke(stack, headers, blob).status_code == 200
    again = _invoke(stack, headers, blob)
    assert again.status_code == 401 and "replayed" in again.json()["error"]


@pytest.mark.parametrize("version", [1, 2])
def test_resigned_invoke_with_a_used_nonce_is_409(stack: Stack, version: int) -> None:
    nonce = _nonce()
    headers, blob = _signed_invoke(stack, version, nonce)
    assert _invoke(stack, headers, blob).status_code == 200
    fresh_blob = seal_invoke(stack.inst, PAYLOAD, version=version, nonce=nonce)[1]
    resigned = {**headers, **stack.sign("validator", "/e2e/invoke", fresh_blob)}
    r = _invoke(stack, resigned, fresh_blob)
    assert r.status_code == 409 and r.json()["reason"] == "replayed"


def test_v1_ciphertext_under_a_fresh_nonce_is_409(stack: Stack) -> None:
    """v1 has no AAD, so the miner recognises the ciphertext itself (its KEM ct hash)."""
    headers, blob = _signed_invoke(stack, 1, _nonce())
    assert _invoke(stack, headers, blob).status_code == 200
    moved = {**headers, "X-E2E-Nonce": _nonce(), **stack.sign("validator", "/e2e/invoke", blob)}
    r = _invoke(stack, moved, blob)
    assert r.status_code == 409 and r.json()["reason"] == "replayed"


def test_v2_ciphertext_under_a_fresh_nonce_does_not_open(stack: Stack) -> None:
    """v2 binds the nonce into the AAD: the moved envelope fails authentication."""
    headers, blob = _signed_invoke(stack, 2, _nonce())
    assert _invoke(stack, headers, blob).status_code == 200
    moved = {**headers, "X-E2E-Nonce": _nonce(), **stack.sign("validator", "/e2e/invoke", blob)}
    r = _invoke(stack, moved, blob)
    assert r.status_code == 400 and r.json()["reason"] == "bad_envelope"


def _discover(s: Stack, key: str) -> list[str]:
    r = httpx.get(f"{s.gateway_url}/e2e/instances/{s.inst.chute_id}",
                  headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["instances"][0]["nonces"]


def _via_gateway(s: Stack, key: str, nonce: str, version: int = 2) -> httpx.Response:
    headers, blob, _ = seal_invoke(s.inst, PAYLOAD, version=version, nonce=nonce)
    return httpx.post(s.gateway_url + "/e2e/invoke", content=blob, timeout=30,
                      headers={**headers, "Authorization": f"Bearer {key}"})


def test_gateway_nonce_is_single_use(stack: Stack) -> None:
    nonce = _discover(stack, stack.api_key)[0]
    assert _via_gateway(stack, stack.api_key, nonce).status_code == 200
    again = _via_gateway(stack, stack.api_key, nonce)
    assert again.status_code == 409 and again.json()["reason"] == "nonce_used"


def test_gateway_nonce_of_another_key_is_403_and_not_burned(stack: Stack) -> None:
    other_key, _ = stack.keys.create("another-app")
    nonce = _discover(stack, stack.api_key)[0]
    stolen = _via_gateway(stack, other_key, nonce)
    assert stolen.status_code == 403 and stolen.json()["reason"] == "nonce_scope"
    assert _via_gateway(stack, stack.api_key, nonce).status_code == 200


def test_deregistered_validator_is_refused(stack: Stack) -> None:
    body = json.dumps({"nonce": "ef" * 32}).encode()

    def attest() -> httpx.Response:
        headers = {**stack.sign("retired", "/attest", body), "Content-Type": "application/json"}
        return httpx.post(stack.miner_url + "/attest", content=body, headers=headers, timeout=30)

    assert attest().status_code == 200
    stack.chain.deregister(hotkey_ss58(stack.wallets["retired"]))
    stack.refresh_metagraph()
    r = attest()
    assert r.status_code == 403 and "not registered" in r.json()["error"]


def test_attestation_challenge_nonce_is_single_use(stack: Stack) -> None:
    book = ChallengeBook(ttl=60)
    nonce = book.issue()
    body = json.dumps({"nonce": nonce.hex()}).encode()
    headers = {**stack.sign("validator", "/attest", body), "Content-Type": "application/json"}
    wire = httpx.post(stack.miner_url + "/attest", content=body, headers=headers,
                      timeout=30).json()
    verifier = Verifier(Policy.development(gpu_count=1), dangerous_accept_simulated_tee=True,
                        challenges=book)
    evidence = Evidence.from_wire(wire)
    pk = base64.b64decode(wire["e2e_pubkey"])
    rk = base64.b64decode(wire["receipt_pubkey"])  # report_data layout v2 binds it too
    first = verifier.verify(evidence, nonce=nonce, e2e_pubkey=pk, hotkey_ss58=wire["hotkey"],
                            chute_id=wire["chute_id"], receipt_pubkey=rk)
    second = verifier.verify(evidence, nonce=nonce, e2e_pubkey=pk, hotkey_ss58=wire["hotkey"],
                             chute_id=wire["chute_id"], receipt_pubkey=rk)
    assert first.ok, first.reasons
    assert not second.ok
