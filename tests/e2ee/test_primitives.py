"""ML-KEM backends agree; gzip limits refuse bombs; keys never serialise."""

from __future__ import annotations

import gzip
import pickle

import pytest

from chutes_subnet.e2ee import KeyPair, _codec, _kem, _payload
from chutes_subnet.errors import EnvelopeFormatError, PayloadTooLargeError
from chutes_subnet.wire.protocol import MAX_DECOMPRESSED_BYTES


@pytest.mark.parametrize("keygen,encaps", [("cryptography", "pqcrypto"), ("pqcrypto", "cryptography")])
def test_mlkem_backends_interoperate(keygen, encaps):
    kp = KeyPair.generate(backend=keygen)
    ct, secret = _kem.encapsulate(kp.public_bytes, backend=encaps)
    assert len(ct) == 1088 and len(secret) == 32
    assert kp.decapsulate(ct) == secret


def test_wrong_ciphertext_gives_unrelated_secret():
    kp = KeyPair.generate()
    ct, secret = _kem.encapsulate(kp.public_bytes)
    bad = bytes([ct[0] ^ 1]) + ct[1:]
    assert kp.decapsulate(bad) != secret


@pytest.mark.parametrize("length", [0, 1183, 1185])
def test_public_key_length_checked(length):
    with pytest.raises(EnvelopeFormatError):
        _kem.encapsulate(b"\x00" * length)


def test_gzip_output_is_stdlib_compatible():
    data = b"hello " * 1000
    assert gzip.decompress(_codec.compress(data)) == data
    assert _codec.decompress(gzip.compress(data), 10**6) == data


def test_decompression_bomb_refused():
    bomb = gzip.compress(b"\x00" * (MAX_DECOMPRESSED_BYTES + 1024))
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLargeError):
        _payload.load(bomb)


@pytest.mark.parametrize("data", [b"", b"not gzip", gzip.compress(b"{}")[:-3], gzip.compress(b"{}") + b"x",
                                  gzip.compress(b"[1]"), gzip.compress(b"\xff\xfe")])
def test_bad_payloads_are_format_errors(data):
    with pytest.raises(EnvelopeFormatError):
        _payload.load(data)


def test_keypair_refuses_pickling_and_hides_secret_in_repr():
    kp = KeyPair.generate()
    with pytest.raises(TypeError):
        pickle.dumps(kp)
    assert "ML-KEM-768" in repr(kp) and kp.fingerprint in repr(kp)


def test_fast_hkdf_matches_cryptography():
    import os

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from chutes_subnet.e2ee._symmetric import hkdf_expand, hkdf_extract

    for _ in range(20):
        ikm, salt, info = os.urandom(32), os.urandom(32), os.urandom(20)
        expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)
        assert hkdf_expand(hkdf_extract(ikm, salt=salt), info=info) == expected
