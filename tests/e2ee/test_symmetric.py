"""The fast HKDF equals the cryptography package's."""

from __future__ import annotations


def test_fast_hkdf_matches_cryptography():
    import os

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from chutes_subnet.e2ee._symmetric import hkdf_expand, hkdf_extract

    for _ in range(20):
        ikm, salt, info = os.urandom(32), os.urandom(32), os.urandom(20)
        expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)
        assert hkdf_expand(hkdf_extract(ikm, salt=salt), info=info) == expected
