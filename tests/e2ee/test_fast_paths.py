"""The speed paths of the envelope (issue 14) keep the reference semantics exactly.

Each fast path is checked against the plain implementation it replaces: pybase64 vs
binascii's strict decoder, the translate-based HMAC vs :mod:`hmac`, the joined AAD vs
its documented layout, the one-allocation frame packer vs :func:`pack_lines`, and the
container bound that skips small bodies vs the byte count it stands for.
"""

from __future__ import annotations

import binascii
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.e2ee import _b64, _padding, _payload
from chutes_subnet.e2ee._symmetric import hmac_sha256
from chutes_subnet.errors import EnvelopeFormatError, PayloadTooLargeError
from chutes_subnet.wire.context import AAD_LABEL, PADDING_SCHEMES, RequestContext

_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n -_é"


def _strict(data: str | bytes) -> bytes | None:
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except ValueError:
        return None


@given(st.binary(max_size=2000))
def test_b64_round_trip_matches_binascii(data: bytes) -> None:
    text = _b64.encode(data)
    assert text == binascii.b2a_base64(data, newline=False)
    assert _b64.decode(text) == data
    assert _b64.decode(text.decode("ascii")) == data


@settings(max_examples=3000)
@given(st.text(alphabet=_B64_ALPHABET, max_size=24))
def test_b64_decode_accepts_no_more_than_strict_binascii(text: str) -> None:
    try:
        got = _b64.decode(text)
    except ValueError:
        return  # refusing is always allowed (the AEAD would refuse the frame anyway)
    assert got == _strict(text), text


@pytest.mark.parametrize("bad", ["QUJ", "QUJD=", "Q===", "QU JD", "QUJD\n", "-_-_", "QUJé"])
def test_b64_decode_refuses_malformed_frames(bad: str) -> None:
    with pytest.raises(ValueError):
        _b64.decode(bad)


@given(st.binary(max_size=64), st.binary(max_size=300))
def test_hmac_sha256_matches_stdlib(key: bytes, msg: bytes) -> None:
    assert hmac_sha256(key, msg) == hmac.digest(key, msg, "sha256")


def test_hmac_sha256_refuses_long_keys() -> None:
    with pytest.raises(ValueError):
        hmac_sha256(bytes(65), b"m")


def _reference_aad(ctx: RequestContext) -> bytes:
    out = bytearray(AAD_LABEL + b"\x00\x02")
    for field in (ctx.chute_id, ctx.instance_id, ctx.nonce, ctx.path):
        raw = field.encode("utf-8")
        out += len(raw).to_bytes(2, "big") + raw
    out.append(1 if ctx.stream else 0)
    if ctx.padding:
        out.append(ctx.padding)
    return bytes(out)


@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=70), st.text(max_size=40),
       st.booleans(), st.sampled_from(PADDING_SCHEMES))
def test_aad_matches_documented_layout(chute: str, instance: str, nonce: str, path: str,
                                       stream: bool, padding: int) -> None:
    ctx = RequestContext(chute, instance, nonce, path, stream, padding)
    assert ctx.aad() == _reference_aad(ctx)


def test_aad_refuses_overlong_field() -> None:
    with pytest.raises(EnvelopeFormatError, match="too long"):
        RequestContext("c", "i", "n" * 0x10000, "/p", False).aad()


@given(st.binary(min_size=1, max_size=1600))
def test_pack_line_equals_pack_lines(line: bytes) -> None:
    packed = _padding.pack_line(line)
    assert packed == _padding.pack_lines([line])
    assert len(packed) % _padding.FRAME_BUCKET == 0
    assert _padding.unpack_lines(packed) == [line]


def test_pack_line_refuses_empty_line() -> None:
    with pytest.raises(EnvelopeFormatError):
        _padding.pack_line(b"")


@given(st.binary(min_size=1, max_size=5000))
def test_pad_unpad_round_trip(body: bytes) -> None:
    padded = _padding.pad(body)
    assert len(padded) == _padding.padded_size(len(body))
    assert bytes(_padding.unpad(padded)) == body


def test_container_bound_skips_only_bodies_that_cannot_exceed_it() -> None:
    limit = _payload.MAX_JSON_CONTAINERS
    # brackets inside a string: a small body cannot open more than len/2 containers
    small = b'{"a":"' + b"[" * (limit + 10) + b'"}'
    assert len(small) <= 2 * limit
    assert _payload.parse(small)["a"] == "[" * (limit + 10)
    # over twice the limit the (conservative) byte count applies, for "[" and "{" alike
    for opener in (b"[", b"{"):
        big = b'{"a":"' + opener * (2 * limit + 10) + b'"}'
        with pytest.raises(PayloadTooLargeError, match="JSON objects/arrays"):
            _payload.parse(big)
        with pytest.raises(PayloadTooLargeError, match="JSON objects/arrays"):
            _payload.parse(memoryview(b"xxxx" + big)[4:])


def test_container_count_reads_views_without_copying_them_wrong() -> None:
    limit = _payload.MAX_JSON_CONTAINERS
    body = b'{"a":"' + b"x" * (2 * limit) + b'"}'
    padded = _padding.pad(body)
    assert _payload.parse(_padding.unpad(padded)) == {"a": "x" * (2 * limit)}


def _unpack_reference(plain: bytes) -> list[bytes] | None:
    """The record loop alone (no one-bucket shortcut); None where it refuses."""
    total = len(plain)
    if total == 0 or total % _padding.FRAME_BUCKET:
        return None
    lines, pos = [], 0
    while pos + 4 <= total:
        n = int.from_bytes(plain[pos:pos + 4], "big")
        if n == 0:
            break
        if pos + 4 + n > total:
            return None
        lines.append(plain[pos + 4:pos + 4 + n])
        pos += 4 + n
    return lines if lines and total - pos < _padding.FRAME_BUCKET else None


_RECORD_LENGTHS = st.sampled_from([0, 1, 200, 503, 504, 505, 507, 508, 509, 600, 2**32 - 1])


@settings(max_examples=500)
@given(st.lists(st.tuples(_RECORD_LENGTHS, st.binary(max_size=520)), min_size=1, max_size=3),
       st.sampled_from([512, 1024]))
def test_unpack_lines_equals_the_record_loop(records: list[tuple[int, bytes]], size: int) -> None:
    plain = b"".join(n.to_bytes(4, "big") + body for n, body in records)[:size]
    plain = plain.ljust(size, b"\x00")
    try:
        got: list[bytes] | None = _padding.unpack_lines(plain)
    except EnvelopeFormatError:
        got = None
    assert got == _unpack_reference(plain)


def test_v2_key_schedule_is_rfc5869_hkdf() -> None:
    """The inlined T(1) = HMAC(prk, info || 1) keys equal cryptography's HKDF, per label."""
    import hashlib
    import os

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from chutes_subnet.e2ee import v2

    secret, kem_ct, aad = os.urandom(32), os.urandom(1088), b"aad"
    keys = v2._Keys(secret, kem_ct, aad, True)
    salt = hashlib.sha256(kem_ct).digest()
    for got, label in ((keys.req, b"request"), (keys.resp, b"response"), (keys.stream, b"stream")):
        want = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                    info=b"chutes-e2ee/v2 " + label).derive(secret)
        assert got == want, label
    assert keys.binding == salt + hashlib.sha256(aad).digest()


@pytest.mark.parametrize("openers", [0, 3, 256, 257, 5000, 200_000, 200_001])
@pytest.mark.parametrize("as_view", [False, True])
def test_container_scan_equals_the_byte_count(openers: int, as_view: bool) -> None:
    """memchr search up to its budget, bulk count beyond: same verdict as counting bytes,
    and only inside [start:end] (the length prefix and padding never count)."""
    limit = _payload.MAX_JSON_CONTAINERS
    body = bytearray(b"x" * (2 * limit + 1000))
    for i in range(openers):  # spread "{" and "[" over the body
        body[(i * 7919) % len(body)] = ord("{[" [i % 2])
    data = b"{[{[" + bytes(body) + b"[[[["
    expected = bytes(body).count(b"{") + bytes(body).count(b"[") > limit
    view: bytes | memoryview = memoryview(data) if as_view else data
    assert _payload._opens_too_many_containers(view, 4, len(data) - 4) is expected


def test_padded_payload_parses_in_place_with_the_same_limits() -> None:
    limit = _payload.MAX_JSON_CONTAINERS
    ok = b'{"a":"' + b"x" * (2 * limit) + b'","b":[' + b"[]," * 300 + b'[]]}'
    assert _payload.parse_plaintext(_padding.pad(ok), True) == _payload.parse(ok)
    bomb = b'{"a":[' + b"[]," * limit + b"[]]}"
    with pytest.raises(PayloadTooLargeError, match="JSON objects/arrays"):
        _payload.parse_plaintext(_padding.pad(bomb), True)
    with pytest.raises(EnvelopeFormatError, match="not canonical"):
        _payload.parse_plaintext(_padding.pad(ok) + bytes(64), True)
    with pytest.raises(EnvelopeFormatError, match="JSON object"):
        _payload.parse_plaintext(_padding.pad(b"[1]"), True)
