"""Finding F1: deeply nested JSON escapes the error tree as ``RecursionError``.

``json.loads`` raises ``RecursionError`` (not ``ValueError``) past ~1,000 nesting
levels. Every JSON decoder that reads peer-controlled bytes catches only
``ValueError``, so a peer holding a valid key (any API client towards the miner; a
miner towards the gateway and the client) gets a non-project exception through:

* ``e2ee._payload.load`` (request and response plaintext) -> miner answers 500
  ``internal`` instead of 400 ``bad_envelope``;
* ``wire.headers.parse_usage_header`` (miner output) -> the gateway's relay raised after
  the response started and skipped metering (the gateway now bills signed receipts,
  which carry no JSON);
* ``wire.call.StreamDecoder._event`` (stream events) -> the SDK sees a
  ``RecursionError`` instead of ``StreamIntegrityError``.

Fixed by :func:`chutes_subnet.wire.protocol.parse_json`, which every decoder of peer bytes
uses: excessive nesting is a ``ValueError`` like any other malformed JSON. These
tests keep it that way.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from chutes_subnet import receipts
from chutes_subnet.e2ee import KeyPair, RequestContext, v2
from chutes_subnet.errors import E2EEError, ReceiptError, UsageError
from chutes_subnet.wire.call import StreamDecoder
from chutes_subnet.wire.headers import parse_usage_header
from tests.security_fixtures import Stack, seal_invoke, security_stack

DEEP = "[" * 5000 + "]" * 5000


def test_shallow_nesting_is_fine() -> None:
    """Control: moderate depth decodes (the finding is about depth only)."""
    kp = KeyPair.generate()
    ctx = RequestContext("c", "i", "n", "/v1/chat/completions", False)
    blob, _ = v2.seal_request(kp.public_bytes, ctx, b'{"x": ' + b"[" * 200 + b"]" * 200 + b"}")
    payload, _ = v2.open_request(kp, ctx, blob)
    assert "x" in payload


def test_deep_request_payload_is_an_envelope_error() -> None:
    kp = KeyPair.generate()
    ctx = RequestContext("c", "i", "n", "/v1/chat/completions", False)
    blob, _ = v2.seal_request(kp.public_bytes, ctx, ('{"x": ' + DEEP + "}").encode())
    with pytest.raises(E2EEError):
        v2.open_request(kp, ctx, blob)


def test_deep_usage_header_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        parse_usage_header('{"usage": ' + DEEP[:3000] + "}")


def test_deep_receipt_event_is_a_malformed_receipt() -> None:
    tap = receipts.ReceiptTap()
    tap.feed(receipts.EVENT_PREFIX + DEEP[:300].encode() + b'"}\n\n')
    with pytest.raises(ReceiptError) as err:
        receipts.verify(tap.receipt, bytes(32), request_binding=bytes(32),
                        answer_sha256=tap.answer_sha256)
    assert err.value.reason == "malformed"


def test_deep_stream_event_is_an_integrity_error() -> None:
    kp = KeyPair.generate()
    ctx = RequestContext("c", "i", "n", "/v1/chat/completions", True)
    _, session = v2.seal_request(kp.public_bytes, ctx, {"messages": []})
    decoder = StreamDecoder(2, session)
    with pytest.raises(E2EEError):
        decoder.feed(b"data: " + DEEP.encode() + b"\n\n")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with security_stack(str(tmp_path_factory.mktemp("wallets"))) as s:
        yield s


def test_miner_answers_deep_json_with_400(stack: Stack) -> None:
    nonce = "d" * 32
    headers, _, _ = seal_invoke(stack.inst, {}, version=2, nonce=nonce)
    ctx = RequestContext(stack.inst.chute_id, stack.inst.instance_id, nonce,
                         "/v1/chat/completions", False)
    blob, _ = v2.seal_request(base64.b64decode(stack.inst.e2e_pubkey), ctx,
                              ('{"messages": ' + DEEP + "}").encode())
    headers.update(stack.sign("validator", "/e2e/invoke", blob))
    r = httpx.post(stack.miner_url + "/e2e/invoke", content=blob, headers=headers, timeout=30)
    assert r.status_code == 400 and r.json()["reason"] == "bad_envelope"
