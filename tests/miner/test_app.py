"""The miner app on loopback: real uvicorn, embedded model, simulated TEE, real btauth/1
wallets registered on a LocalChain, real e2ee recipes and the real attestation verifier."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chutes_subnet import receipts
from chutes_subnet.attestation import Evidence, Policy, SimulatedProvider, Verifier
from chutes_subnet.auth import ValidatorGate, sign_headers
from chutes_subnet.chain import LocalChain
from chutes_subnet.e2ee import PADDING_NONE, PADDING_PADME, RequestContext, v1, v2
from chutes_subnet.errors import ReceiptError
from chutes_subnet.inference import DEFAULT_SEED, make_backend, reference_completion
from chutes_subnet.instance_id import instance_id_for_key
from chutes_subnet.miner import InstanceIdentity, MinerConfig, create_app
from chutes_subnet.sse import SSEParser
from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58
from chutes_subnet.wire.call import StreamDecoder
from chutes_subnet.wire.headers import InvokeHeaders
from tests.servers import UvicornThread

CHAT = "/v1/chat/completions"
SECRET_PROMPT = "zebra-kumquat-7731 tell me the launch codes"
MAX_BODY = 256 * 1024


@dataclass
class Env:
    url: str
    inst: InstanceIdentity
    wallets: dict[str, Any]
    miner_hotkey: str

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None,
             signer: str | None = "validator", **kw: Any) -> httpx.Response:
        h = dict(headers or {})
        if signer is not None:
            h.update(sign_headers(self.wallets[signer], method="POST", path=path, body=body,
                                  receiver_ss58=self.miner_hotkey))
        return httpx.post(self.url + path, content=body, headers=h, timeout=30, **kw)


def payload(max_tokens: int = 12, content: str = SECRET_PROMPT) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens}


_counter = iter(range(10**9))


def sealed(inst: InstanceIdentity, *, version: int = 2, stream: bool = False,
           body: dict[str, Any] | None = None, nonce: str | None = None,
           bound_instance: str | None = None,
           padding: int = PADDING_PADME) -> tuple[dict[str, str], bytes, Any]:
    """Headers, envelope and client session for one invoke of ``inst`` (v2 padded, as
    clients send it by default)."""
    nonce = nonce or f"{next(_counter):032x}"
    pk = base64.b64decode(inst.e2e_pubkey)
    headers = {"X-Chute-Id": inst.chute_id, "X-Instance-Id": inst.instance_id,
               "X-E2E-Nonce": nonce, "X-E2E-Stream": "true" if stream else "false",
               "X-E2E-Path": CHAT, "Content-Type": "application/octet-stream"}
    body = body or payload()
    if version == 2:
        ctx = RequestContext(inst.chute_id, bound_instance or inst.instance_id, nonce, CHAT,
                             stream, padding)
        blob, session = v2.seal_request(pk, ctx, body)
        headers["X-E2E-Version"] = "2"
        if padding != PADDING_NONE:
            headers["X-E2E-Padding"] = str(padding)
    else:
        blob, session = v1.seal_request(pk, body)
    return headers, blob, session


def open_json(version: int, session: Any, blob: bytes) -> dict[str, Any]:
    return session.open_response(blob) if version == 2 else v1.open_response(session, blob)


def stream_text(version: int, session: Any, raw: bytes) -> str:
    dec = StreamDecoder(version, session)
    plain = dec.feed(raw) + dec.finish()
    text = ""
    for data in SSEParser().feed(plain):
        if data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices", []):
            text += choice["delta"].get("content") or ""
    return text


@pytest.fixture(scope="module")
def wallets(tmp_path_factory) -> dict[str, Any]:
    root = str(tmp_path_factory.mktemp("wallets"))
    return {n: ensure_dev_wallet(n, "hot", root)
            for n in ("miner", "validator", "weak", "nopermit", "stranger")}


@pytest.fixture(scope="module")
def gate(wallets) -> ValidatorGate:
    chain = LocalChain(":memory:", netuid=7)
    for name, permit, stake in (("miner", False, 0.0), ("validator", True, 1000.0),
                                ("weak", True, 1.0), ("nopermit", False, 5000.0)):
        chain.register(hotkey_ss58(wallets[name]), coldkey_ss58(wallets[name]), stake=stake,
                       validator_permit=permit)
    snapshot = asyncio.run(chain.metagraph())
    return ValidatorGate(hotkey_ss58(wallets["miner"]), lambda: snapshot, min_stake=10.0)


def start(config: MinerConfig, wallets: dict[str, Any], gate: ValidatorGate | None,
          **provider_opts: Any) -> tuple[UvicornThread, InstanceIdentity]:
    app = create_app(config, hotkey_ss58=hotkey_ss58(wallets["miner"]),
                     backend=make_backend("embedded"),
                     provider=SimulatedProvider(gpu_count=1, **provider_opts), gate=gate)
    return UvicornThread(app).start(), app.state.instance


@pytest.fixture(scope="module")
def env(wallets, gate) -> Iterator[Env]:
    cfg = MinerConfig(tee="simulated", max_body_bytes=MAX_BODY)
    server, inst = start(cfg, wallets, gate)
    try:
        yield Env(server.url, inst, wallets, hotkey_ss58(wallets["miner"]))
    finally:
        server.stop()


# --- attestation -------------------------------------------------------------------

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


# --- encrypted inference -------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 2])
def test_non_stream_answer_matches_the_reference_model(env: Env, version: int) -> None:
    headers, blob, session = sealed(env.inst, version=version)
    r = env.post("/e2e/invoke", blob, headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    out = open_json(version, session, r.content)
    expected = reference_completion(CHAT, payload(), seed=DEFAULT_SEED)
    assert out["choices"][0]["message"]["content"] == expected
    usage = json.loads(r.headers["x-e2e-usage"])
    assert usage == out["usage"] and usage["completion_tokens"] == 12
    assert SECRET_PROMPT.encode() not in r.content


@pytest.mark.parametrize("version", [1, 2])
def test_stream_wire_shape_and_text(env: Env, version: int) -> None:
    headers, blob, session = sealed(env.inst, version=version, stream=True)
    r = env.post("/e2e/invoke", blob, headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = SSEParser().feed(r.content)
    kinds = [("DONE" if d == "[DONE]" else next(iter(json.loads(d)))) for d in events]
    body = ["e2e"] * 12  # 12 token chunks; no usage chunk: the request did not ask for it
    if version == 1:  # the plaintext usage event stays for the public client
        assert kinds == ["e2e_init", *body, "usage", "e2e_receipt", "DONE"]
        assert json.loads(events[-3])["usage"]["completion_tokens"] == 12
    else:  # v2: usage authenticated in the final frame and signed in the receipt
        assert kinds == [*body, "e2e_final", "e2e_receipt", "DONE"]
    assert stream_text(version, session, r.content) == \
        reference_completion(CHAT, payload(), seed=DEFAULT_SEED)


def _receipt_check(env: Env, version: int, headers: dict[str, str], blob: bytes,
                   answer: bytes, wire: str | None) -> receipts.Receipt:
    """Verify as the gateway does: binding from what was sent, key from the attestation."""
    ctx = InvokeHeaders.parse({k.lower(): v for k, v in headers.items()}).context()
    return receipts.verify(wire, base64.b64decode(env.inst.receipt_pubkey),
                           request_binding=receipts.request_binding_for(version, blob, ctx),
                           answer_sha256=hashlib.sha256(answer).digest(),
                           instance_id=env.inst.instance_id, now_ms=int(time.time() * 1000))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("stream", [False, True])
def test_every_answer_carries_a_valid_receipt(env: Env, version: int, stream: bool) -> None:
    headers, blob, _session = sealed(env.inst, version=version, stream=stream)
    r = env.post("/e2e/invoke", blob, headers)
    assert r.status_code == 200
    if stream:
        tap = receipts.ReceiptTap()
        tap.feed(r.content)
        answer = r.content[:tap.answer_bytes]
        rec = _receipt_check(env, version, headers, blob, answer, tap.receipt)
        assert r.content[tap.answer_bytes:].endswith(b"data: [DONE]\n\n")
    else:
        rec = _receipt_check(env, version, headers, blob, r.content, r.headers["x-e2e-receipt"])
    assert (rec.prompt_tokens, rec.completion_tokens) != (0, 0)
    assert rec.completion_tokens == 12 and rec.instance_id == env.inst.instance_id
    with pytest.raises(ReceiptError) as err:  # the same receipt does not cover other bytes
        _receipt_check(env, version, headers, blob, b"x" + r.content, rec.wire)
    assert err.value.reason == "wrong_answer"


@pytest.mark.parametrize("padding,header", [
    (PADDING_PADME, None),   # a router strips the padding negotiation
    (PADDING_NONE, "1"),     # or adds it to an unpadded envelope
])
def test_padding_negotiation_is_bound_into_the_envelope(env: Env, padding: int,
                                                        header: str | None) -> None:
    headers, blob, _ = sealed(env.inst, padding=padding)
    headers.pop("X-E2E-Padding", None)
    if header is not None:
        headers["X-E2E-Padding"] = header
    r = env.post("/e2e/invoke", blob, headers)
    assert r.status_code == 400 and r.json()["reason"] == "bad_envelope"


@pytest.mark.parametrize("stream", [False, True])
def test_padded_answers_hide_their_length(env: Env, stream: bool) -> None:
    sizes = set()
    for words in (1, 5, 12):
        headers, blob, session = sealed(env.inst, stream=stream, body=payload(max_tokens=words))
        r = env.post("/e2e/invoke", blob, headers)
        assert r.status_code == 200
        if stream:
            sizes |= {len(d) for d in SSEParser().feed(r.content) if '"e2e"' in d}
        else:
            sizes.add(len(r.content))
            assert open_json(2, session, r.content)["usage"]["completion_tokens"] == words
    assert len(sizes) == 1  # every frame (or every short answer) has one size


def test_v2_final_frame_authenticates_usage(env: Env) -> None:
    headers, blob, session = sealed(env.inst, stream=True)
    r = env.post("/e2e/invoke", blob, headers)
    opener = session.stream_opener()
    final = None
    for data in SSEParser().feed(r.content):
        ev = {} if data == "[DONE]" else json.loads(data)
        if "e2e" in ev:
            opener.open(ev["e2e"])
        elif "e2e_final" in ev:
            final = opener.open_final(ev["e2e_final"])
    assert final is not None and final["chunks"] == 12
    assert final["usage"]["completion_tokens"] == 12


def _stream_chunks(version: int, session: Any, raw: bytes) -> list[dict[str, Any]]:
    dec = StreamDecoder(version, session)
    plain = dec.feed(raw) + dec.finish()
    return [json.loads(d) for d in SSEParser().feed(plain) if d != "[DONE]"]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("options,expect_usage_chunk", [
    (None, False), ({"include_usage": False}, False), ({"include_usage": "yes"}, False),
    ({"include_usage": True}, True),
])
def test_usage_chunk_only_when_the_request_asks(env: Env, version: int, options: Any,
                                                expect_usage_chunk: bool) -> None:
    """OpenAI semantics: a ``choices: []`` usage chunk reaches the application only with
    ``stream_options.include_usage: true``; the receipt and v2 final frame count anyway."""
    body = payload(max_tokens=7)
    if options is not None:
        body["stream_options"] = options
    headers, blob, session = sealed(env.inst, version=version, stream=True, body=body)
    r = env.post("/e2e/invoke", blob, headers)
    assert r.status_code == 200
    chunks = _stream_chunks(version, session, r.content)
    empty = [c for c in chunks if c.get("choices") == []]
    assert all("usage" not in c for c in chunks if c.get("choices"))
    if expect_usage_chunk:
        assert len(empty) == 1 and chunks[-1] is empty[0]
        assert empty[0]["usage"]["completion_tokens"] == 7
    else:
        assert empty == [] and len(chunks) == 7
    tap = receipts.ReceiptTap()
    tap.feed(r.content)
    rec = _receipt_check(env, version, headers, blob, r.content[:tap.answer_bytes], tap.receipt)
    assert rec.completion_tokens == 7


def test_public_chutes_client_v1_against_the_miner(env: Env, chutes_client_venv) -> None:
    from tests.interop import run_client

    built = run_client("""
        import base64
        from chutes_e2ee.crypto import build_e2ee_request
        r = build_e2ee_request(DATA["pk"], DATA["payload"])
        RESULT = {"blob": base64.b64encode(r.blob).decode(),
                  "sk": base64.b64encode(r.response_sk).decode()}
    """, {"pk": env.inst.e2e_pubkey, "payload": {**payload(), "stream": True}})
    headers, _, _ = sealed(env.inst, version=1, stream=True)
    r = env.post("/e2e/invoke", base64.b64decode(built["blob"]), headers)
    assert r.status_code == 200
    lines = run_client("""
        import base64, json
        from chutes_e2ee.crypto import decrypt_stream_init, decrypt_stream_chunk
        sk = base64.b64decode(DATA["sk"]); key = None; out = []
        for ev in DATA["events"]:
            if ev == "[DONE]":
                continue
            ev = json.loads(ev)
            if "e2e_init" in ev:
                key = decrypt_stream_init(sk, ev["e2e_init"])
            elif "e2e" in ev:
                out.append(decrypt_stream_chunk(ev["e2e"], key))
        RESULT = out
    """, {"sk": built["sk"], "events": SSEParser().feed(r.content)})
    text = "".join(c["delta"].get("content") or ""
                   for line in lines for c in json.loads(line[len("data: "):])["choices"])
    assert text == reference_completion(CHAT, payload(), seed=DEFAULT_SEED)


# --- refusals ------------------------------------------------------------------------

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


def test_bodies_over_the_limit_are_refused_413(env: Env) -> None:
    headers, _, _ = sealed(env.inst)
    big = b"\x02" + b"\x00" * MAX_BODY
    r = env.post("/e2e/invoke", big, headers, signer=None)
    assert r.status_code == 413 and r.json()["reason"] == "too_large"

    def chunked() -> Iterator[bytes]:
        for _ in range(5):
            yield b"\x00" * (MAX_BODY // 4)

    r = httpx.post(env.url + "/e2e/invoke", content=chunked(), headers=headers)
    assert r.status_code == 413


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


@pytest.mark.parametrize("version", [1, 2])
def test_stop_over_the_wire_matches_the_validator_reference(env: Env, version: int) -> None:
    full = reference_completion(CHAT, payload(max_tokens=30), seed=DEFAULT_SEED)
    body = {**payload(max_tokens=30), "stop": [full[12:15]]}
    expected = reference_completion(CHAT, body, seed=DEFAULT_SEED)
    assert expected == full[:full.find(full[12:15])]
    headers, blob, session = sealed(env.inst, version=version, stream=True, body=body)
    r = env.post("/e2e/invoke", blob, headers)
    assert r.status_code == 200 and stream_text(version, session, r.content) == expected
    headers, blob, session = sealed(env.inst, version=version, body=body)
    out = open_json(version, session, env.post("/e2e/invoke", blob, headers).content)
    assert out["choices"][0]["message"]["content"] == expected
    assert out["choices"][0]["finish_reason"] == "stop"


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


def test_server_never_logs_plaintext(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answers = []
    for version in (1, 2):
        for stream in (False, True):
            headers, blob, session = sealed(env.inst, version=version, stream=stream,
                                            body=payload(max_tokens=24))
            r = env.post("/e2e/invoke", blob, headers)
            assert r.status_code == 200
            answers.append(stream_text(version, session, r.content) if stream
                           else open_json(version, session, r.content)
                           ["choices"][0]["message"]["content"])
    bad = {"model": "m", "messages": [{"role": "nobody", "content": SECRET_PROMPT}]}
    headers, blob, _ = sealed(env.inst, body=bad)
    assert env.post("/e2e/invoke", blob, headers).status_code == 400
    assert len(answers[0]) == 24 and len(set(answers)) == 1
    records = [r for r in caplog.records if r.name.startswith("chutes_subnet.miner")]
    assert len(records) >= 5  # the miner did log these requests
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert SECRET_PROMPT not in logged and "zebra" not in logged
    assert answers[0] not in logged


# --- limits, faults, plaintext gate ---------------------------------------------------

async def test_concurrency_limit_answers_429_with_retry_after(wallets) -> None:
    cfg = MinerConfig(tee="simulated", max_concurrency=1,
                      invoke_auth="none", retry_after=3)
    server, inst = start(cfg, wallets, None)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            headers, blob, _ = sealed(inst, stream=True, body=payload(max_tokens=3000))
            async with client.stream("POST", server.url + "/e2e/invoke", content=blob,
                                     headers=headers) as first:
                assert first.status_code == 200
                async for _ in first.aiter_bytes():
                    break  # the stream is running and holds the only slot
                h2, b2, _ = sealed(inst)
                r = await client.post(server.url + "/e2e/invoke", content=b2, headers=h2)
                assert r.status_code == 429 and r.headers["retry-after"] == "3"
                assert r.json()["reason"] == "busy"
            for _ in range(200):  # the abandoned stream frees its slot
                if (await client.get(server.url + "/health")).json()["load"] == "low":
                    break
                await asyncio.sleep(0.02)
            h3, b3, _ = sealed(inst)
            assert (await client.post(server.url + "/e2e/invoke", content=b3,
                                      headers=h3)).status_code == 200
    finally:
        server.stop()


def test_wrong_tokens_fault_corrupts_the_answer(wallets) -> None:
    cfg = MinerConfig(tee="simulated", invoke_auth="none",
                      fault="wrong-tokens")
    server, inst = start(cfg, wallets, None)
    try:
        headers, blob, session = sealed(inst)
        r = httpx.post(server.url + "/e2e/invoke", content=blob, headers=headers)
        text = session.open_response(r.content)["choices"][0]["message"]["content"]
        expected = reference_completion(CHAT, payload(), seed=DEFAULT_SEED)
        assert len(text) == len(expected) and text != expected
        headers, blob, session = sealed(inst, stream=True)
        r = httpx.post(server.url + "/e2e/invoke", content=blob, headers=headers)
        assert stream_text(2, session, r.content) == text
    finally:
        server.stop()


def test_stall_fault_never_answers(wallets) -> None:
    cfg = MinerConfig(tee="simulated", invoke_auth="none", fault="stall")
    server, inst = start(cfg, wallets, None)
    try:
        headers, blob, _ = sealed(inst)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/e2e/invoke", content=blob, headers=headers, timeout=0.5)
    finally:
        server.stop()


@pytest.mark.parametrize("fault,reason", [("debug-quote", "debug_td"),
                                          ("foreign-hotkey", "binding_mismatch")])
def test_attestation_faults_are_caught_by_the_verifier(wallets, fault: str, reason: str) -> None:
    cfg = MinerConfig(tee="simulated", invoke_auth="none", fault=fault)
    server, inst = start(cfg, wallets, None)
    try:
        nonce = bytes(32)
        r = httpx.post(server.url + "/attest", json={"nonce": nonce.hex()})
        verdict = Verifier(Policy.development(gpu_count=1), dangerous_accept_simulated_tee=True) \
            .verify(Evidence.from_wire(r.json()), nonce=nonce,
                    e2e_pubkey=base64.b64decode(inst.e2e_pubkey), hotkey_ss58=inst.hotkey,
                    chute_id=inst.chute_id)
        assert not verdict.ok and reason in {str(x.code) for x in verdict.reasons}
    finally:
        server.stop()


def test_dev_switches_are_refused_outside_the_simulated_tee(wallets) -> None:
    with pytest.raises(ValueError, match="tee"):
        MinerConfig(fault="stall")
    with pytest.raises(ValueError, match="tee"):
        MinerConfig(dangerous_plaintext_endpoint=True)

    class RealLookingProvider:
        def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str) -> Evidence:
            raise AssertionError("not called")

    for cfg in (MinerConfig(tee="simulated", fault="stall"),
                MinerConfig(tee="simulated", dangerous_plaintext_endpoint=True)):
        with pytest.raises(ValueError, match="simulated"):
            create_app(cfg, hotkey_ss58="5F", backend=make_backend("embedded"),
                       provider=RealLookingProvider(), gate=None)


def test_plaintext_endpoint_is_off_by_default_and_same_answer_when_on(env: Env,
                                                                      wallets) -> None:
    body = json.dumps(payload()).encode()
    headers, _, _ = sealed(env.inst)
    assert env.post("/dangerous/plaintext/invoke", body, headers).status_code == 404
    cfg = MinerConfig(tee="simulated", invoke_auth="none",
                      dangerous_plaintext_endpoint=True)
    server, inst = start(cfg, wallets, None)
    try:
        h, _, _ = sealed(inst)
        r = httpx.post(server.url + "/dangerous/plaintext/invoke", content=body, headers=h)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == \
            reference_completion(CHAT, payload(), seed=DEFAULT_SEED)
    finally:
        server.stop()
