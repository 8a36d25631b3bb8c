"""v2 padding: Padmé envelopes and bucketed stream frames, authenticated and negotiated in the AAD."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.e2ee import (
    PADDING_NONE,
    PADDING_PADME,
    KeyPair,
    RequestContext,
    _codec,
    _padding,
    v2,
)
from chutes_subnet.errors import (
    DecryptionError,
    E2EEError,
    EnvelopeFormatError,
    StreamIntegrityError,
)

KP = KeyPair.generate()
CTX = RequestContext("chute-1", "inst-1", "n0nce", "/v1/chat/completions", True, PADDING_PADME)
KEM_AND_TAG = 1 + 1088 + 16


def test_padding_is_in_the_aad_and_absent_means_none() -> None:
    assert CTX.padded
    unpadded = CTX.with_padding(PADDING_NONE)
    assert CTX.aad() == unpadded.aad() + b"\x01"  # unpadded keeps the original v2 AAD
    assert RequestContext("c", "i", "n", "/p", False).padding == PADDING_NONE  # no header


def test_unknown_padding_scheme_is_refused() -> None:
    with pytest.raises(EnvelopeFormatError):
        RequestContext("c", "i", "n", "/p", False, padding=7)


@pytest.mark.parametrize("size", [0, 10, 200, 490, 600, 5000, 70000])
def test_request_size_is_the_padme_bucket(size: int) -> None:
    payload = {"content": "x" * size}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    blob, _ = v2.seal_request(KP.public_bytes, CTX, payload)
    assert len(blob) - KEM_AND_TAG == _padding.padme(max(_padding.MIN_ENVELOPE, len(raw) + 4))


def test_close_lengths_share_one_envelope_size() -> None:
    sizes = {len(v2.seal_request(KP.public_bytes, CTX, {"c": "y" * n})[0]) for n in range(533, 565)}
    assert len(sizes) == 1


def test_router_stripping_the_padding_negotiation_fails() -> None:
    """The client padded; a router drops the padding header, so the miner builds an
    unpadded context: the AAD differs and the request does not open."""
    blob, _ = v2.seal_request(KP.public_bytes, CTX, {"c": "hello"})
    with pytest.raises(DecryptionError):
        v2.open_request(KP, CTX.with_padding(PADDING_NONE), blob)
    blob, _ = v2.seal_request(KP.public_bytes, CTX.with_padding(PADDING_NONE), {"c": "hello"})
    with pytest.raises(DecryptionError):
        v2.open_request(KP, CTX, blob)


def test_padding_bytes_are_authenticated() -> None:
    """Cutting the padding off the ciphertext (to learn the true length) breaks the tag."""
    blob, _ = v2.seal_request(KP.public_bytes, CTX, {"c": "short"})
    body = bytearray(blob[:-16])
    for cut in (1, 16, 200):
        with pytest.raises(E2EEError):
            v2.open_request(KP, CTX, bytes(body[:-cut]) + blob[-16:])


def test_unpad_refuses_non_canonical_padding() -> None:
    good = _padding.pad(b"abc")
    assert bytes(_padding.unpad(good)) == b"abc"
    for bad in (good + b"\x00" * 32, good[:-1], (10**6).to_bytes(4, "big") + good[4:], b"\x00"):
        with pytest.raises(EnvelopeFormatError):
            _padding.unpad(bad)


def test_padme_overhead_bound() -> None:
    for n in list(range(4, 5000)) + [2**k + d for k in range(12, 26) for d in (-1, 0, 1, 12345)]:
        p = _padding.padme(n)
        s = (n.bit_length() - 1).bit_length()  # S = floor(log2 E) + 1
        assert n <= p < n + n / 2**s
        if n >= 256:
            assert (p - n) / n < 0.0625


def _stream_pair(ctx: RequestContext):
    blob, client = v2.seal_request(KP.public_bytes, ctx, {"x": 1})
    _, server = v2.open_request(KP, ctx, blob)
    return server.stream_sealer(), client.stream_opener()


def test_stream_frames_are_one_fixed_size_whatever_the_token() -> None:
    sealer, opener = _stream_pair(CTX)
    lines = [b'data: {"choices":[{"delta":{"content":"' + b"t" * n + b'"}}]}' for n in range(1, 120)]
    frames = [sealer.seal(line) for line in lines]
    assert {len(f) for f in frames} == {len(base64.b64encode(bytes(_padding.FRAME_BUCKET + 16)))}
    assert [opener.open(f) for f in frames] == lines
    final = sealer.finish({"completion_tokens": 7})
    assert len(final) == len(frames[0])
    assert opener.open_final(final)["usage"] == {"completion_tokens": 7}


def test_coalesced_frame_carries_several_lines() -> None:
    sealer, opener = _stream_pair(CTX)
    lines = [b"data: a", b"data: bb", b"data: ccc"]
    frame = sealer.seal_lines(lines)
    assert opener.open_lines(frame) == lines
    opener.open_final(sealer.finish())
    opener.close()


def test_unpadded_stream_cannot_coalesce() -> None:
    sealer, _ = _stream_pair(CTX.with_padding(PADDING_NONE))
    with pytest.raises(EnvelopeFormatError):
        sealer.seal_lines([b"a", b"b"])


def test_padded_stream_refuses_a_frame_from_an_unpadded_session() -> None:
    """Same keys, other negotiation: the binding differs, so frames do not cross over."""
    sealer, _ = _stream_pair(CTX.with_padding(PADDING_NONE))
    _, opener = _stream_pair(CTX)
    with pytest.raises(StreamIntegrityError):
        opener.open(sealer.seal(b"data: x"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=1500), min_size=1, max_size=6))
def test_property_pack_unpack_lines(lines: list[bytes]) -> None:
    packed = _padding.pack_lines(lines)
    assert len(packed) % _padding.FRAME_BUCKET == 0
    assert _padding.unpack_lines(packed) == lines


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000))
def test_property_unpack_garbage_is_a_format_error(data: bytes) -> None:
    try:
        _padding.unpack_lines(data)
    except EnvelopeFormatError:
        pass


def test_stored_gzip_is_read_by_stdlib_and_does_not_compress() -> None:
    """Compression policy: what we write is a gzip member of stored blocks (v1 readers
    still read it) whose size does not depend on the content's redundancy."""
    for n in (0, 1, 65535, 65536, 300000):
        data = b"a" * n
        blob = _codec.compress(data)
        assert gzip.decompress(blob) == data
        assert len(blob) == len(_codec.compress(bytes(range(256)) * (n // 256) + b"a" * (n % 256)))


def test_unpadded_v2_still_round_trips() -> None:
    ctx = dataclasses.replace(CTX, stream=False, padding=PADDING_NONE)
    blob, client = v2.seal_request(KP.public_bytes, ctx, {"a": "ü" * 100})
    got, server = v2.open_request(KP, ctx, blob)
    assert got == {"a": "ü" * 100}
    assert client.open_response(server.seal_response({"b": 2})) == {"b": 2}
