"""Instance identity is the attested key (DESIGN B1): the one derivation of an id.

``instance_id = hex(SHA-256(e2e_pubkey))[:32]`` — derived, never chosen. The miner
names itself with it; validators, gateways and clients recompute it from the key
they were shown (bound into the attestation) and refuse any other name. A restart
is a fresh key, hence a new instance. Two instances share an id only by sharing a
key.

Dependency-free (hashlib, base64) on purpose: the gateway, which must not load
any E2EE code, checks ids with it too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

__all__ = ["INSTANCE_ID_HEX_CHARS", "PUBLIC_KEY_BYTES", "instance_id_for_b64", "instance_id_for_key"]

#: 32 hex digits: the first 128 bits of SHA-256(public key).
INSTANCE_ID_HEX_CHARS = 32
#: Size of an ML-KEM-768 encapsulation (public) key.
PUBLIC_KEY_BYTES = 1184


def instance_id_for_key(public_key: bytes) -> str:
    """``hex(SHA-256(public_key))[:32]``: the instance id of the key's holder."""
    if not isinstance(public_key, (bytes, bytearray)) or not public_key:
        raise TypeError("public_key must be non-empty bytes")
    return hashlib.sha256(public_key).hexdigest()[:INSTANCE_ID_HEX_CHARS]


def instance_id_for_b64(public_key_b64: str) -> str:
    """The instance id of a base64 ML-KEM-768 public key (``ValueError`` if it is not one)."""
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("public key is not valid base64") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"public key must be {PUBLIC_KEY_BYTES} bytes")
    return instance_id_for_key(raw)
