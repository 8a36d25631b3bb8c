"""ML-KEM-768 key pairs.

An instance key pair is generated inside the TEE at start and lives in memory only:
there is deliberately no serialisation method, and ``repr`` shows only a public-key
fingerprint.

An instance is *named by its key*: :attr:`KeyPair.instance_id` applies the one
derivation of :mod:`chutes_subnet.instance_id` (DESIGN B1).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from chutes_subnet.e2ee import _kem, _payload
from chutes_subnet.errors import EnvelopeFormatError
from chutes_subnet.instance_id import instance_id_for_key

__all__ = ["KeyPair", "decode_public_key"]


class KeyPair:
    """An ML-KEM-768 decapsulation key with its public key."""

    __slots__ = ("_handle", "public_bytes")

    def __init__(self, handle: Any, public_bytes: bytes) -> None:
        self._handle = handle
        self.public_bytes = public_bytes

    @classmethod
    def generate(cls, backend: str | None = None) -> KeyPair:
        """Fresh key pair (``cryptography`` backend unless ``backend="pqcrypto"``)."""
        handle, public = _kem.generate(backend)
        return cls(handle, public)

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_bytes).decode("ascii")

    @property
    def fingerprint(self) -> str:
        """First 16 hex digits of SHA-256(public key): safe to log."""
        return hashlib.sha256(self.public_bytes).hexdigest()[:16]

    @property
    def instance_id(self) -> str:
        """The instance id this key names (:func:`instance_id_for_key`)."""
        return instance_id_for_key(self.public_bytes)

    def decapsulate(self, kem_ciphertext: bytes) -> bytes:
        """Shared secret for ``kem_ciphertext`` (implicit rejection on garbage)."""
        return _kem.decapsulate(self._handle, kem_ciphertext)

    def __repr__(self) -> str:
        return f"KeyPair(ML-KEM-768, fp={self.fingerprint})"

    def __reduce__(self):  # refuse pickling: the private key must never leave memory
        raise TypeError("KeyPair cannot be serialised")


def decode_public_key(b64: str) -> bytes:
    """Decode a base64 ML-KEM-768 public key, checking its length."""
    raw = _payload.b64decode(b64, "public key")
    if len(raw) != _kem.PUBLIC_KEY_SIZE:
        raise EnvelopeFormatError("ML-KEM-768 public key must be 1184 bytes")
    return raw
