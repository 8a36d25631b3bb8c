"""``POST /e2e/invoke`` refusals on a real miner: callers, replays, misdirected and malformed
envelopes, invalid requests (without echoing the prompt)."""

from __future__ import annotations

import httpx
import pytest

from chutes_subnet.auth import sign_headers
from tests.miner_fixtures import SECRET_PROMPT, Env, payload, sealed


def test_invoke_caller_checks(env: Env) -> None:
    headers, blob, _ = sealed(env.inst)
    assert env.post("/e2e/invoke", blob, headers, signer=None).status_code == 401
    assert env.post("/e2e/invoke", blob, headers, signer="nopermit").status_code == 403
    assert env.post("/e2e/invoke", blob, headers, signer="stranger").status_code == 403
    signed = dict(headers)
    signed.update(sign_headers(env.wallets["validator"], method="POST", path="/e2e/invoke",
                               body=blob, receiver_ss58=env.miner_hotkey))
    assert httpx.post(env.url + "/e2e/invoke", content=blob, headers=signed).status_code == 200
    again = httpx.post(env.url + "/e2e/invoke", content=blob, headers=signed)
    assert again.status_code == 401 and "replayed" in again.json()["error"]


def test_replayed_nonce_is_refused_409_after_decryption(env: Env) -> None:
    headers, blob, _ = sealed(env.inst)
    garbage = env.post("/e2e/invoke", b"\x02" + b"\x00" * 2000, headers)
    assert garbage.status_code == 400 and garbage.json()["reason"] == "bad_envelope"
    assert env.post("/e2e/invoke", blob, headers).status_code == 200  # nonce not burned
    r = env.post("/e2e/invoke", blob, headers)
    assert r.status_code == 409 and r.json()["reason"] == "replayed"
    # a fresh request reusing the nonce is refused too
    h2, blob2, _ = sealed(env.inst, nonce=headers["X-E2E-Nonce"])
    assert env.post("/e2e/invoke", blob2, h2).status_code == 409


def test_v1_ciphertext_replayed_under_a_new_nonce_is_refused(env: Env) -> None:
    headers, blob, _ = sealed(env.inst, version=1)
    assert env.post("/e2e/invoke", blob, headers).status_code == 200
    headers["X-E2E-Nonce"] = "f" * 32
    r = env.post("/e2e/invoke", blob, headers)
    assert r.status_code == 409 and r.json()["reason"] == "replayed"


def test_requests_for_another_instance_are_refused(env: Env) -> None:
    headers, blob, _ = sealed(env.inst, bound_instance="inst-2")
    r = env.post("/e2e/invoke", blob, headers)  # headers name us, AAD names inst-2
    assert r.status_code == 400 and r.json()["reason"] == "bad_envelope"
    for header, value in (("X-Instance-Id", "inst-2"), ("X-Chute-Id", "another-chute")):
        h, b, _ = sealed(env.inst)
        h[header] = value
        r = env.post("/e2e/invoke", b, h)
        assert r.status_code == 421 and r.json()["reason"] == "misdirected"


@pytest.mark.parametrize("header,value,status", [
    ("X-E2E-Path", "/v1/embeddings", 400),
    ("X-E2E-Version", "3", 400),
    ("X-E2E-Stream", "maybe", 400),
    ("X-E2E-Nonce", "", 400),
])
def test_malformed_invokes(env: Env, header: str, value: str, status: int) -> None:
    headers, blob, _ = sealed(env.inst)
    headers[header] = value
    assert env.post("/e2e/invoke", blob, headers).status_code == status


def test_invalid_request_is_a_generic_400(env: Env) -> None:
    body = {"model": "m", "messages": [], "max_tokens": 5}  # no messages
    headers, blob, _ = sealed(env.inst, body=body)
    r = env.post("/e2e/invoke", blob, headers)
    assert r.status_code == 400 and r.json()["reason"] == "invalid_request"
    assert "messages" not in r.text


def test_n_above_one_is_a_specific_400_naming_n(env: Env) -> None:
    body = {**payload(), "n": 3}
    headers, blob, _ = sealed(env.inst, body=body)
    r = env.post("/e2e/invoke", blob, headers)
    assert r.status_code == 400 and r.json()["reason"] == "invalid_request"
    assert r.json()["error"].startswith("n: only n=1 is supported")
    assert SECRET_PROMPT not in r.text
