"""ML-KEM-768: the two backends agree, a wrong ciphertext gives an unrelated secret, key
lengths are checked."""

from __future__ import annotations

import pytest

from chutes_subnet.e2ee import KeyPair, _kem
from chutes_subnet.errors import EnvelopeFormatError


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
