"""v2 envelope: round trips and the tamper matrix the client must detect."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.e2ee import KeyPair, RequestContext, v2
from chutes_subnet.errors import (
    DecryptionError,
    E2EEError,
    EnvelopeFormatError,
    StreamIntegrityError,
)

KP = KeyPair.generate()
CTX = RequestContext("chute-1", "inst-1", "n0nce", "/v1/chat/completions", True)
PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _pair(ctx: RequestContext = CTX, payload=PAYLOAD):
    blob, client = v2.seal_request(KP.public_bytes, ctx, payload)
    got, server = v2.open_request(KP, ctx, blob)
    return blob, client, server, got


def _stream(server, n=5, usage=None):
    s = server.stream_sealer()
    frames = [s.seal(f"data: {{\"i\": {i}}}".encode()) for i in range(n)]
    return frames, s.finish(usage)


def _consume(client, frames, final):
    op = client.stream_opener()
    out = [op.open(f) for f in frames]
    if final is not None:
        op.open_final(final)
    op.close()
    return out


def test_round_trip_request_response_and_stream():
    _, client, server, got = _pair()
    assert got == PAYLOAD
    assert client.open_response(server.seal_response({"ok": 1})) == {"ok": 1}
    frames, final = _stream(server, 3, usage={"total_tokens": 9})
    assert _consume(client, frames, final) == [b'data: {"i": 0}', b'data: {"i": 1}', b'data: {"i": 2}']


@pytest.mark.parametrize(
    "field,value",
    [("chute_id", "chute-2"), ("instance_id", "inst-2"), ("nonce", "other"), ("path", "/v1/completions"),
     ("stream", False)],
    ids=lambda v: str(v),
)
def test_swapped_header_is_rejected(field, value):
    blob, *_ = _pair()
    with pytest.raises(DecryptionError):
        v2.open_request(KP, dataclasses.replace(CTX, **{field: value}), blob)


def test_request_for_another_instance_key_is_rejected():
    blob, *_ = _pair()
    with pytest.raises(DecryptionError):
        v2.open_request(KeyPair.generate(), CTX, blob)


def test_response_replayed_from_another_request_is_rejected():
    _, client_a, _server_a, _ = _pair()
    _, _client_b, server_b, _ = _pair()
    with pytest.raises(DecryptionError):
        client_a.open_response(server_b.seal_response({"x": 1}))
    frames_b, final_b = _stream(server_b, 2)
    with pytest.raises(StreamIntegrityError):
        _consume(client_a, frames_b, final_b)


@pytest.mark.parametrize(
    "attack",
    ["reorder", "duplicate", "drop_middle", "drop_first", "truncate", "drop_final_keep_chunks", "final_early",
     "bitflip_chunk", "bitflip_final", "data_after_final"],
)
def test_stream_tamper_matrix(attack):
    _, client, server, _ = _pair()
    frames, final = _stream(server, 5)
    tail = None
    if attack == "reorder":
        frames[1], frames[2] = frames[2], frames[1]
    elif attack == "duplicate":
        frames.insert(2, frames[1])
    elif attack == "drop_middle":
        del frames[2]
    elif attack == "drop_first":
        del frames[0]
    elif attack == "truncate":
        frames, final = frames[:3], None
    elif attack == "drop_final_keep_chunks":
        final = None
    elif attack == "final_early":
        frames = frames[:2]
    elif attack in ("bitflip_chunk", "bitflip_final"):
        target = bytearray(base64.b64decode(frames[3] if attack == "bitflip_chunk" else final))
        target[0] ^= 0x01
        if attack == "bitflip_chunk":
            frames[3] = base64.b64encode(bytes(target)).decode()
        else:
            final = base64.b64encode(bytes(target)).decode()
    elif attack == "data_after_final":
        tail = frames[0]
    with pytest.raises(StreamIntegrityError):
        op = client.stream_opener()
        for f in frames:
            op.open(f)
        if final is not None:
            op.open_final(final)
        if tail is not None:
            op.open(tail)
        op.close()


def test_stream_failure_is_sticky():
    _, client, server, _ = _pair()
    frames, _final = _stream(server, 3)
    op = client.stream_opener()
    with pytest.raises(StreamIntegrityError):
        op.open(frames[1])
    with pytest.raises(StreamIntegrityError):
        op.open(frames[0])


def test_final_frame_authenticates_usage():
    _, client, server, _ = _pair()
    frames, final = _stream(server, 2, usage={"completion_tokens": 2})
    op = client.stream_opener()
    for f in frames:
        op.open(f)
    assert op.open_final(final) == {"chunks": 2, "usage": {"completion_tokens": 2}}


def test_not_a_v2_envelope():
    blob, *_ = _pair()
    with pytest.raises(EnvelopeFormatError):
        v2.open_request(KP, CTX, b"\x01" + blob[1:])
    with pytest.raises(EnvelopeFormatError):
        v2.open_request(KP, CTX, blob[:100])


def test_aad_encoding_is_injective_on_field_boundaries():
    a = RequestContext("ab", "c", "n", "/p", False).aad()
    b = RequestContext("a", "bc", "n", "/p", False).aad()
    assert a != b


@settings(max_examples=150, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=20), st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=200),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20),
    max_size=8), stream=st.booleans(), nonce=st.text(min_size=1, max_size=40))
def test_property_round_trip(payload, stream, nonce):
    ctx = RequestContext("c", "i", nonce, "/v1/completions", stream)
    blob, client = v2.seal_request(KP.public_bytes, ctx, payload)
    got, server = v2.open_request(KP, ctx, blob)
    assert got == payload
    assert client.open_response(server.seal_response(payload)) == payload


_FIXED_BLOB, _FIXED_CLIENT = v2.seal_request(KP.public_bytes, CTX, PAYLOAD)
_, _FIXED_SERVER = v2.open_request(KP, CTX, _FIXED_BLOB)
_FIXED_RESPONSE = _FIXED_SERVER.seal_response({"answer": "x" * 50})


@settings(max_examples=400, deadline=None)
@given(pos=st.integers(min_value=0, max_value=len(_FIXED_BLOB) - 1), xor=st.integers(min_value=1, max_value=255))
def test_property_any_single_byte_mutation_of_a_request_is_rejected(pos, xor):
    mutated = bytearray(_FIXED_BLOB)
    mutated[pos] ^= xor
    with pytest.raises(E2EEError):
        v2.open_request(KP, CTX, bytes(mutated))


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(min_value=0, max_value=len(_FIXED_RESPONSE) - 1), xor=st.integers(min_value=1, max_value=255))
def test_property_any_single_byte_mutation_of_a_response_is_rejected(pos, xor):
    mutated = bytearray(_FIXED_RESPONSE)
    mutated[pos] ^= xor
    with pytest.raises(DecryptionError):
        _FIXED_CLIENT.open_response(bytes(mutated))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000))
def test_property_garbage_never_escapes_our_error_types(data):
    with pytest.raises(E2EEError):
        v2.open_request(KP, CTX, data)
    with pytest.raises(E2EEError):
        _FIXED_CLIENT.open_response(data)
