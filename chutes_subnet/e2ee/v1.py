"""Protocol v1: byte-compatible with the public Chutes E2EE client (``chutes-e2ee`` 0.1.0).

Request (client -> instance)::

    kem_ct (1088) || aead_nonce (12) || ChaCha20-Poly1305(gzip(JSON + "e2e_response_pk")) || tag (16)
    key = HKDF-SHA256(ikm=ML-KEM shared secret, salt=kem_ct[:16], info=b"e2e-req-v1")

``e2e_response_pk`` is the base64 public key of a fresh client ML-KEM-768 key pair.
The non-stream response has the same layout, encapsulated to that key with info
``e2e-resp-v1``. A stream starts with ``{"e2e_init": b64(kem_ct)}`` (info
``e2e-stream-v1``) followed by ``{"e2e": b64(aead_nonce || ct || tag)}`` per SSE line.
No AAD, random chunk nonces: v1 cannot detect a router that drops, reorders or
truncates a stream; that is why v2 exists.
"""

from __future__ import annotations

import os
from typing import Any

from chutes_subnet.e2ee import _kem, _payload
from chutes_subnet.e2ee._symmetric import NONCE_SIZE, TAG_SIZE, Aead, hkdf, open_, seal
from chutes_subnet.e2ee.keys import KeyPair, decode_public_key
from chutes_subnet.errors import EnvelopeFormatError

__all__ = [
    "ResponseKey",
    "seal_request",
    "open_request",
    "seal_response",
    "open_response",
    "StreamSealer",
    "StreamOpener",
    "INFO_REQ",
    "INFO_RESP",
    "INFO_STREAM",
]

INFO_REQ = b"e2e-req-v1"
INFO_RESP = b"e2e-resp-v1"
INFO_STREAM = b"e2e-stream-v1"
RESPONSE_PK_FIELD = "e2e_response_pk"
_HEADER = _kem.CIPHERTEXT_SIZE + NONCE_SIZE
_MIN_BLOB = _HEADER + TAG_SIZE


def _derive(secret: bytes, kem_ct: bytes, info: bytes) -> bytes:
    return hkdf(secret, salt=kem_ct[:16], info=info)


def _seal_blob(public_key: bytes, info: bytes, payload: dict[str, Any] | bytes) -> bytes:
    kem_ct, secret = _kem.encapsulate(public_key)
    nonce = os.urandom(NONCE_SIZE)
    return kem_ct + nonce + seal(_derive(secret, kem_ct, info), nonce, _payload.dump(payload), None)


def _open_blob(instance_key: KeyPair, info: bytes, blob: bytes) -> dict[str, Any]:
    _payload.check_envelope_size(blob)
    if len(blob) < _MIN_BLOB:
        raise EnvelopeFormatError("v1 envelope is too short")
    kem_ct = blob[: _kem.CIPHERTEXT_SIZE]
    nonce = blob[_kem.CIPHERTEXT_SIZE : _HEADER]
    secret = instance_key.decapsulate(kem_ct)
    return _payload.load(open_(_derive(secret, kem_ct, info), nonce, blob[_HEADER:], None))


class ResponseKey:
    """The client's per-request key pair that v1 responses are encapsulated to."""

    __slots__ = ("_kp",)

    def __init__(self, kp: KeyPair) -> None:
        self._kp = kp

    @property
    def public_bytes(self) -> bytes:
        return self._kp.public_bytes

    def decapsulate(self, kem_ct: bytes) -> bytes:
        return self._kp.decapsulate(kem_ct)


def seal_request(instance_pk: bytes, payload: dict[str, Any]) -> tuple[bytes, ResponseKey]:
    """Client: encrypt ``payload`` to an instance; returns the body and the response key."""
    rk = KeyPair.generate()
    body = {**payload, RESPONSE_PK_FIELD: _payload.b64encode(rk.public_bytes)}
    return _seal_blob(instance_pk, INFO_REQ, body), ResponseKey(rk)


def open_request(instance_key: KeyPair, blob: bytes) -> tuple[dict[str, Any], bytes]:
    """Instance: decrypt a request; returns (payload without the response key, response public key)."""
    payload = _open_blob(instance_key, INFO_REQ, blob)
    pk_b64 = payload.pop(RESPONSE_PK_FIELD, None)
    if pk_b64 is None:
        raise EnvelopeFormatError("v1 request lacks e2e_response_pk")
    return payload, decode_public_key(pk_b64)


def seal_response(response_pk: bytes, payload: dict[str, Any]) -> bytes:
    """Instance: encrypt a non-stream response to the client's response key."""
    return _seal_blob(response_pk, INFO_RESP, payload)


def open_response(key: ResponseKey, blob: bytes) -> dict[str, Any]:
    """Client: decrypt a non-stream response."""
    return _open_blob(key._kp, INFO_RESP, blob)


class StreamSealer:
    """Instance side of a v1 stream: one KEM encapsulation, then one AEAD per SSE line."""

    __slots__ = ("_kem_ct", "_aead")

    def __init__(self, response_pk: bytes) -> None:
        self._kem_ct, secret = _kem.encapsulate(response_pk)
        self._aead = Aead(_derive(secret, self._kem_ct, INFO_STREAM))

    def init_event(self) -> dict[str, str]:
        """The first SSE event: ``{"e2e_init": b64(kem_ct)}``."""
        return {"e2e_init": _payload.b64encode(self._kem_ct)}

    def seal_line(self, line: str) -> dict[str, str]:
        """Encrypt one SSE line (``"data: {...}"``) into ``{"e2e": b64(nonce||ct||tag)}``."""
        nonce = os.urandom(NONCE_SIZE)
        return {"e2e": _payload.b64encode(nonce + self._aead.seal(nonce, line.encode(), None))}


class StreamOpener:
    """Client side of a v1 stream."""

    __slots__ = ("_key", "_aead")

    def __init__(self, key: ResponseKey) -> None:
        self._key = key
        self._aead: Aead | None = None

    def open_init(self, kem_ct_b64: str) -> None:
        kem_ct = _payload.b64decode(kem_ct_b64, "e2e_init")
        secret = self._key.decapsulate(kem_ct)
        self._aead = Aead(_derive(secret, kem_ct, INFO_STREAM))

    def open_line(self, chunk_b64: str) -> str:
        if self._aead is None:
            raise EnvelopeFormatError("e2e chunk before e2e_init")
        raw = _payload.b64decode(chunk_b64, "e2e chunk")
        if len(raw) < NONCE_SIZE + TAG_SIZE:
            raise EnvelopeFormatError("e2e chunk is too short")
        plain = self._aead.open(raw[:NONCE_SIZE], raw[NONCE_SIZE:], None)
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeFormatError("e2e chunk is not UTF-8") from exc
