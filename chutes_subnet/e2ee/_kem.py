"""ML-KEM-768 behind one seam: ``cryptography`` (OpenSSL) first, ``pqcrypto`` as fallback.

Both implement FIPS 203, so ciphertexts and shared secrets interoperate; the test
suite cross-checks them in both directions. Private keys never leave this module's
handles and are never serialised.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from chutes_subnet.errors import EnvelopeFormatError
from chutes_subnet.wire.protocol import KEM_CIPHERTEXT_BYTES

PUBLIC_KEY_SIZE = 1184
CIPHERTEXT_SIZE = KEM_CIPHERTEXT_BYTES
SHARED_SECRET_SIZE = 32

try:  # pragma: no branch - depends on the installed OpenSSL
    from cryptography.hazmat.primitives.asymmetric import mlkem as _ossl

    _ossl.MLKEM768PrivateKey.generate()
    BACKEND = "cryptography"
except Exception:  # noqa: BLE001 - any failure means "use the fallback"
    _ossl = None  # type: ignore[assignment]
    BACKEND = "pqcrypto"


def _pq() -> Any:
    import pqcrypto.kem.ml_kem_768 as pq

    return pq


def generate(backend: str | None = None) -> tuple[Any, bytes]:
    """Return ``(private_handle, public_key_bytes)`` for a fresh keypair."""
    if (backend or BACKEND) == "cryptography":
        sk = _ossl.MLKEM768PrivateKey.generate()
        return ("cryptography", sk), sk.public_key().public_bytes_raw()
    pk, sk = _pq().keygen()
    return ("pqcrypto", sk), bytes(pk)


@lru_cache(maxsize=256)
def _parsed(public_key: bytes) -> Any:
    """The parsed key object, cached per instance key: parsing costs as much as encapsulating."""
    try:
        return _ossl.MLKEM768PublicKey.from_public_bytes(public_key)
    except ValueError as exc:  # not cached: lru_cache keeps only results
        raise EnvelopeFormatError("invalid ML-KEM-768 public key") from exc


def encapsulate(public_key: bytes, backend: str | None = None) -> tuple[bytes, bytes]:
    """Encapsulate to ``public_key``; return ``(kem_ciphertext, shared_secret)``."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise EnvelopeFormatError("ML-KEM-768 public key must be 1184 bytes")
    if (backend or BACKEND) == "cryptography":
        secret, ct = _parsed(bytes(public_key)).encapsulate()
        return ct, secret
    ct, secret = _pq().encaps(public_key)
    return bytes(ct), bytes(secret)


def decapsulate(private_handle: Any, kem_ciphertext: bytes) -> bytes:
    """Decapsulate; a wrong ciphertext yields an unrelated secret (implicit rejection)."""
    if len(kem_ciphertext) != CIPHERTEXT_SIZE:
        raise EnvelopeFormatError("ML-KEM-768 ciphertext must be 1088 bytes")
    kind, sk = private_handle
    if kind == "cryptography":
        return sk.decapsulate(kem_ciphertext)
    return bytes(_pq().decaps(sk, kem_ciphertext))
