"""Answer receipts (chutes_subnet.receipts): the signed layout, every reject path, the stream tap."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet import receipts
from chutes_subnet.e2ee import KeyPair, RequestContext, _kem, v1, v2
from chutes_subnet.errors import EnvelopeFormatError, ReceiptError

SIGNER = receipts.ReceiptSigner.generate()
BINDING = hashlib.sha256(b"request").digest()
ANSWER = b'data: {"e2e":"AAAA"}\n\n' * 20 + b'data: {"e2e_final":"BBBB"}\n\n'
ANSWER_HASH = hashlib.sha256(ANSWER).digest()


def _sign(**over) -> str:
    args = {"request_binding": BINDING, "answer_sha256": ANSWER_HASH, "prompt_tokens": 27,
                "completion_tokens": 8, "instance_id": "inst-1", "issued_at_ms": 1_000_000}
    args.update(over)
    return SIGNER.sign(**args)


def _verify(wire, key=SIGNER.public_bytes, **over):
    args = {"request_binding": BINDING, "answer_sha256": ANSWER_HASH, "instance_id": "inst-1",
                "now_ms": 1_000_500}
    args.update(over)
    return receipts.verify(wire, key, **args)


def test_round_trip_exposes_the_signed_usage() -> None:
    rec = _verify(_sign())
    assert (rec.prompt_tokens, rec.completion_tokens, rec.total_tokens) == (27, 8, 35)
    assert rec.instance_id == "inst-1" and rec.to_dict()["answer_sha256"] == ANSWER_HASH.hex()


def test_request_binding_builder_matches_the_v2_session() -> None:
    kp = KeyPair.generate()
    ctx = RequestContext("c", "i", "n", "/v1/chat/completions", False)
    blob, client = v2.seal_request(kp.public_bytes, ctx, {"a": 1})
    _, server = v2.open_request(kp, ctx, blob)
    expected = receipts.request_binding(blob[1:1 + _kem.CIPHERTEXT_SIZE], ctx.aad())
    assert client.request_binding == server.request_binding == expected


def test_request_binding_for_reads_the_kem_ciphertext_of_either_version() -> None:
    assert _kem.CIPHERTEXT_SIZE == 1088  # the wire constant the keyless gateway reads
    kp = KeyPair.generate()
    ctx = RequestContext("c", "i", "n", "/v1/chat/completions", True)
    blob2, _ = v2.seal_request(kp.public_bytes, ctx, {"a": 1})
    blob1, _ = v1.seal_request(kp.public_bytes, {"a": 1})
    assert receipts.request_binding_for(2, blob2, ctx) == receipts.request_binding(
        blob2[1:1 + _kem.CIPHERTEXT_SIZE], ctx.aad())
    assert receipts.request_binding_for(1, blob1, ctx) == receipts.request_binding(
        blob1[:_kem.CIPHERTEXT_SIZE], ctx.aad())
    with pytest.raises(EnvelopeFormatError):
        receipts.request_binding_for(2, b"\x02short", ctx)
    with pytest.raises(EnvelopeFormatError):
        receipts.request_binding_for(3, blob2, ctx)


def _flip(wire: str, index: int) -> str:
    raw = bytearray(__import__("base64").b64decode(wire))
    raw[index] ^= 1
    return __import__("base64").b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("index,reason", [
    (66, "bad_signature"),   # prompt_tokens rewritten by the host
    (72, "bad_signature"),   # completion_tokens rewritten
    (5, "bad_signature"),    # request binding
    (-1, "bad_signature"),   # signature itself
])
def test_rewritten_receipt_is_caught(index: int, reason: str) -> None:
    with pytest.raises(ReceiptError) as err:
        _verify(_flip(_sign(), index))
    assert err.value.reason == reason


@pytest.mark.parametrize("wire,key,over,reason", [
    (None, SIGNER.public_bytes, {}, "missing"),
    ("", SIGNER.public_bytes, {}, "missing"),
    ("@@@", SIGNER.public_bytes, {}, "malformed"),
    ("QUFB", SIGNER.public_bytes, {}, "malformed"),
    ("A" * 5000, SIGNER.public_bytes, {}, "malformed"),
    ("ok", None, {}, "no_key"),
    ("ok", receipts.ReceiptSigner.generate().public_bytes, {}, "bad_signature"),
    ("ok", SIGNER.public_bytes, {"request_binding": bytes(32)}, "wrong_request"),
    ("ok", SIGNER.public_bytes, {"answer_sha256": hashlib.sha256(b"other").digest()}, "wrong_answer"),
    ("ok", SIGNER.public_bytes, {"instance_id": "inst-2"}, "wrong_instance"),
    ("ok", SIGNER.public_bytes, {"now_ms": 1_000_000 + 16 * 60 * 1000}, "stale"),
    ("ok", SIGNER.public_bytes, {"now_ms": 1_000_000 - 6 * 60 * 1000}, "stale"),
], ids=["none", "empty", "not-base64", "short", "oversize", "no-key", "other-key",
        "other-request", "other-answer", "other-instance", "too-old", "from-the-future"])
def test_reject_paths(wire, key, over, reason) -> None:
    with pytest.raises(ReceiptError) as err:
        _verify(_sign() if wire == "ok" else wire, key, **over)
    assert err.value.reason == reason


#: the group order of Ed25519 (a signature's S must be below it)
_L = 2**252 + 27742317777372353535851937790883648493


def _raw(wire: str) -> bytearray:
    return bytearray(__import__("base64").b64decode(wire))


def _wire(raw: bytes) -> str:
    return __import__("base64").b64encode(bytes(raw)).decode()


def test_non_canonical_signature_scalar_is_refused() -> None:
    raw = _raw(_sign())
    s = int.from_bytes(raw[-32:], "little") + _L  # same point equation, S >= L
    raw[-32:] = s.to_bytes(32, "little")
    with pytest.raises(ReceiptError) as err:
        _verify(_wire(raw))
    assert err.value.reason == "bad_signature"


def test_small_order_key_cannot_sign_for_anything() -> None:
    """Identity key with R = identity, S = 0 satisfies the cofactorless equation for
    every message; OpenSSL accepts it, libsodium refuses small-order keys."""
    identity = b"\x01" + bytes(31)
    body = _raw(_sign())[:-64]
    forged = _wire(bytes(body) + identity + bytes(32))
    with pytest.raises(ReceiptError) as err:
        _verify(forged, identity)
    assert err.value.reason == "bad_signature"


@pytest.mark.parametrize("over", [
    {"prompt_tokens": -1}, {"completion_tokens": 1 << 32}, {"prompt_tokens": True},
    {"instance_id": ""}, {"instance_id": "é"}, {"instance_id": "x" * 129},
    {"request_binding": b"short"},
])
def test_signer_refuses_out_of_range_values(over) -> None:
    with pytest.raises(ValueError):
        _sign(**over)


def test_max_values_fit_the_wire_bound() -> None:
    wire = _sign(prompt_tokens=receipts.MAX_TOKENS, completion_tokens=receipts.MAX_TOKENS,
                 instance_id="x" * 128, issued_at_ms=(1 << 64) - 1)
    assert len(wire) <= receipts.MAX_WIRE_CHARS
    rec = _verify(wire, instance_id=None, now_ms=None)
    assert rec.prompt_tokens == receipts.MAX_TOKENS


def _stream_with_receipt(wire: str) -> bytes:
    return ANSWER + receipts.EVENT_PREFIX + wire.encode() + b'"}\n\ndata: [DONE]\n\n'


@settings(max_examples=80, deadline=None)
@given(st.randoms(use_true_random=False))
def test_tap_finds_the_receipt_at_any_chunking(rnd: random.Random) -> None:
    wire = _sign()
    stream = _stream_with_receipt(wire)
    tap, pos = receipts.ReceiptTap(), 0
    while pos < len(stream):
        step = rnd.randint(1, 64)
        tap.feed(stream[pos:pos + step])
        pos += step
    tap.close()
    assert tap.receipt == wire
    assert tap.answer_sha256 == ANSWER_HASH and tap.answer_bytes == len(ANSWER)


def test_tap_hashes_everything_when_no_receipt_and_bounds_memory() -> None:
    tap = receipts.ReceiptTap()
    tap.feed(ANSWER)
    tap.feed(receipts.EVENT_PREFIX + b"A" * 100_000)  # too long to be a receipt: hashed, not held
    tap.close()
    assert tap.receipt is None
    assert tap.answer_bytes == len(ANSWER) + len(receipts.EVENT_PREFIX) + 100_000


def test_tap_marks_a_malformed_receipt_event() -> None:
    tap = receipts.ReceiptTap()
    tap.feed(ANSWER + receipts.EVENT_PREFIX + b"abc\n\n")
    assert tap.receipt == ""
    with pytest.raises(ReceiptError):
        _verify(tap.receipt)


def test_signer_is_not_serialisable() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(SIGNER)
    assert "Ed25519" in repr(SIGNER)


_events = st.lists(st.one_of(
    st.binary(min_size=0, max_size=300).map(
        lambda b: b"data: " + json.dumps({"e2e": b.hex()}).encode()),
    st.just(b"data: [DONE]"),
    st.text(max_size=40).map(lambda s: b": " + s.encode("utf-8", "replace").replace(b"\n", b"")),
), max_size=12)


@settings(max_examples=200, deadline=None)
@given(before=_events, after=_events, cuts=st.lists(st.integers(1, 64), max_size=30))
def test_receipt_tap_finds_the_receipt_however_the_stream_is_cut(
        before: list[bytes], after: list[bytes], cuts: list[int]) -> None:
    answer = b"".join(e + b"\n\n" for e in before)
    wire = "QUJD" * 40  # shape only: the tap extracts, verify() judges
    stream = answer + receipts.event(wire) + b"".join(e + b"\n\n" for e in after)
    tap, pos = receipts.ReceiptTap(), 0
    for n in cuts:
        tap.feed(stream[pos:pos + n])
        pos += n
    tap.feed(stream[pos:])
    tap.close()
    assert tap.receipt == wire
    assert tap.answer_sha256 == hashlib.sha256(answer).digest()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=20000))
def test_receipt_tap_never_invents_a_receipt_and_stays_bounded(blob: bytes) -> None:
    tap = receipts.ReceiptTap()
    for i in range(0, len(blob), 997):
        tap.feed(blob[i:i + 997])
        assert len(tap._partial) <= receipts.ReceiptTap._MAX_LINE
    assert tap.receipt is None or receipts.EVENT_PREFIX in blob
