"""``POST /e2e/invoke`` answers on a real miner: the embedded model's exact text through v1
and v2 envelopes, stream wire shape, receipts, padding, usage, the public Chutes client."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import pytest

from chutes_subnet import receipts
from chutes_subnet.e2ee import PADDING_NONE, PADDING_PADME
from chutes_subnet.errors import ReceiptError
from chutes_subnet.inference import DEFAULT_SEED, reference_completion
from chutes_subnet.sse import SSEParser
from chutes_subnet.wire.call import StreamDecoder
from chutes_subnet.wire.headers import InvokeHeaders
from tests.miner_fixtures import CHAT, SECRET_PROMPT, Env, open_json, payload, sealed, stream_text


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
    else:  # v2: usage authenticated in the final frame and signed in the receipt; padded
        # frames may carry two tokens (coalesced, tests/miner/test_invoke_coalescing.py)
        n = kinds.index("e2e_final")
        assert kinds == ["e2e"] * n + ["e2e_final", "e2e_receipt", "DONE"]
        opener = session.stream_opener()
        per_frame = [len(opener.open_lines(json.loads(d)["e2e"])) for d in events[:n]]
        assert per_frame[0] == 1 and sum(per_frame) == 12   # the first token goes alone
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
    final, frames, lines = None, 0, 0
    for data in SSEParser().feed(r.content):
        ev = {} if data == "[DONE]" else json.loads(data)
        if "e2e" in ev:
            lines += len(opener.open_lines(ev["e2e"]))
            frames += 1
        elif "e2e_final" in ev:
            final = opener.open_final(ev["e2e_final"])
    assert final is not None and final["chunks"] == frames and lines == 12  # frames, not tokens
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
