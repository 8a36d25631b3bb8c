"""HKDF-SHA256 key derivation and ChaCha20-Poly1305 with one failure type."""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from chutes_subnet.errors import DecryptionError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16


def hkdf(ikm: bytes, *, salt: bytes, info: bytes, length: int = KEY_SIZE) -> bytes:
    """HKDF-SHA256 (extract + expand)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hkdf_expand(prk: bytes, *, info: bytes, length: int = KEY_SIZE) -> bytes:
    """HKDF-Expand (RFC 5869) for several labelled keys from one extracted PRK.

    For one 32-byte key this is a single ``T(1) = HMAC(prk, info || 0x01)``, done
    directly (several times faster than the generic object); the test suite checks it
    against ``cryptography``'s HKDFExpand.
    """
    if length == KEY_SIZE:
        return hmac.digest(prk, info + b"\x01", "sha256")
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


def hkdf_extract(ikm: bytes, *, salt: bytes) -> bytes:
    """HKDF-Extract: HMAC-SHA256(salt, ikm)."""
    return hmac.digest(salt, ikm, "sha256")


def seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes | None) -> bytes:
    """ChaCha20-Poly1305 encrypt; returns ``ciphertext || tag``."""
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def open_(key: bytes, nonce: bytes, sealed: bytes | memoryview, aad: bytes | None) -> bytes:
    """ChaCha20-Poly1305 decrypt; any failure is a message-less DecryptionError."""
    if len(sealed) < TAG_SIZE:
        raise DecryptionError()
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise DecryptionError() from None


class Aead:
    """A ChaCha20-Poly1305 context reused for many frames under one key."""

    __slots__ = ("_c",)

    def __init__(self, key: bytes) -> None:
        self._c = ChaCha20Poly1305(key)

    @property
    def raw(self) -> ChaCha20Poly1305:
        """The underlying cipher, for hot loops that bind its methods once (stream frames)."""
        return self._c

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes | None) -> bytes:
        return self._c.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, sealed: bytes | memoryview, aad: bytes | None) -> bytes:
        if len(sealed) < TAG_SIZE:
            raise DecryptionError()
        try:
            return self._c.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise DecryptionError() from None
