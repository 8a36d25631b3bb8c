"""Protocol v2: the hardened envelope (negotiated with ``X-E2E-Version: 2``).

Request (client -> instance)::

    0x02 || kem_ct (1088) || ChaCha20-Poly1305(key_req, nonce=0^12, gzip(JSON), aad=AAD_req) || tag (16)

``AAD_req = RequestContext.aad()`` (see :mod:`chutes_subnet.e2ee.context`) binds the
version, chute id, instance id, gateway nonce, invoked path and stream flag: a router
that swaps any header makes decryption fail.

Key schedule (one ML-KEM encapsulation per request, HPKE-style)::

    prk        = HKDF-Extract(salt = SHA256(kem_ct), ikm = shared secret)
    key_req    = HKDF-Expand(prk, "chutes-e2ee/v2 request",  32)
    key_resp   = HKDF-Expand(prk, "chutes-e2ee/v2 response", 32)
    key_stream = HKDF-Expand(prk, "chutes-e2ee/v2 stream",   32)
    binding    = SHA256(kem_ct) || SHA256(AAD_req)

Each key encrypts under its own nonce space: the request and the non-stream response
are single messages (nonce 0). Responses are therefore bound to exactly one request
(a response replayed from another request does not authenticate) and their AAD also
carries ``binding``.

Stream frames (base64 of ``ct || tag``, nonce never sent)::

    chunk i : nonce = 0x00 || i (11 bytes BE),  aad = "chunk" || binding
    final   : nonce = 0x01 || n (11 bytes BE),  aad = "final" || binding,
              plaintext = JSON {"chunks": n, "usage": {...} | null}

A dropped, duplicated or reordered chunk fails authentication at the next frame; a
stream without a valid final frame (truncation) fails at ``close``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from chutes_subnet.e2ee import _kem, _payload
from chutes_subnet.e2ee._symmetric import TAG_SIZE, Aead, hkdf_expand, hkdf_extract
from chutes_subnet.e2ee.context import RequestContext
from chutes_subnet.e2ee.keys import KeyPair
from chutes_subnet.errors import DecryptionError, EnvelopeFormatError, StreamIntegrityError
from chutes_subnet.wire.protocol import parse_json

__all__ = [
    "VERSION_BYTE",
    "ClientSession",
    "ServerSession",
    "StreamSealer",
    "StreamOpener",
    "seal_request",
    "open_request",
    "open_request_raw",
    "request_kem_ciphertext",
]

VERSION_BYTE = b"\x02"
_ZERO_NONCE = bytes(12)
_LABEL_REQ = b"chutes-e2ee/v2 request"
_LABEL_RESP = b"chutes-e2ee/v2 response"
_LABEL_STREAM = b"chutes-e2ee/v2 stream"
_HEADER = 1 + _kem.CIPHERTEXT_SIZE
_MAX_FRAMES = 2**64


class _Keys:
    __slots__ = ("req", "resp", "stream", "binding")

    def __init__(self, secret: bytes, kem_ct: bytes, aad: bytes) -> None:
        ct_hash = hashlib.sha256(kem_ct).digest()
        prk = hkdf_extract(secret, salt=ct_hash)
        self.req = hkdf_expand(prk, info=_LABEL_REQ)
        self.resp = hkdf_expand(prk, info=_LABEL_RESP)
        self.stream = hkdf_expand(prk, info=_LABEL_STREAM)
        self.binding = ct_hash + hashlib.sha256(aad).digest()


def _frame_nonce(final: bool, counter: int) -> bytes:
    return (b"\x01" if final else b"\x00") + counter.to_bytes(11, "big")


class StreamSealer:
    """Instance side of a v2 stream: counter nonces and an authenticated final frame."""

    __slots__ = ("_aead", "_chunk_aad", "_final_aad", "_n", "_done")

    def __init__(self, keys: _Keys) -> None:
        self._aead = Aead(keys.stream)
        self._chunk_aad = b"chunk" + keys.binding
        self._final_aad = b"final" + keys.binding
        self._n = 0
        self._done = False

    def seal(self, data: bytes) -> str:
        """Encrypt the next chunk; returns the base64 frame."""
        if self._done:
            raise EnvelopeFormatError("stream already finished")
        frame = self._aead.seal(_frame_nonce(False, self._n), data, self._chunk_aad)
        self._n += 1
        return _payload.b64encode(frame)

    def finish(self, usage: dict[str, Any] | None = None) -> str:
        """The final frame: authenticates the chunk count (and the usage, if given)."""
        if self._done:
            raise EnvelopeFormatError("stream already finished")
        self._done = True
        body = json.dumps({"chunks": self._n, "usage": usage}, separators=(",", ":")).encode()
        return _payload.b64encode(self._aead.seal(_frame_nonce(True, self._n), body, self._final_aad))


class StreamOpener:
    """Client side of a v2 stream. Every failure is a :class:`StreamIntegrityError`."""

    __slots__ = ("_aead", "_chunk_aad", "_final_aad", "_n", "_final", "_broken")

    def __init__(self, keys: _Keys) -> None:
        self._aead = Aead(keys.stream)
        self._chunk_aad = b"chunk" + keys.binding
        self._final_aad = b"final" + keys.binding
        self._n = 0
        self._final: dict[str, Any] | None = None
        self._broken = False

    def _check_open(self) -> None:
        if self._broken:
            raise StreamIntegrityError("stream already failed verification")
        if self._final is not None:
            raise StreamIntegrityError("data after the final frame")

    def open(self, frame_b64: str) -> bytes:
        """Decrypt the next chunk in order."""
        self._check_open()
        try:
            data = self._aead.open(
                _frame_nonce(False, self._n), _payload.b64decode(frame_b64, "frame"), self._chunk_aad
            )
        except (DecryptionError, EnvelopeFormatError):
            self._broken = True
            raise StreamIntegrityError("stream chunk failed authentication (tampered, reordered or dropped)") from None
        self._n += 1
        return data

    def open_final(self, frame_b64: str) -> dict[str, Any]:
        """Verify the final frame; returns ``{"chunks": n, "usage": ...}``."""
        self._check_open()
        try:
            body = self._aead.open(
                _frame_nonce(True, self._n), _payload.b64decode(frame_b64, "final frame"), self._final_aad
            )
            final = parse_json(body)
        except (DecryptionError, EnvelopeFormatError, ValueError):
            self._broken = True
            raise StreamIntegrityError("final frame failed authentication (stream truncated or tampered)") from None
        if not isinstance(final, dict) or final.get("chunks") != self._n:
            self._broken = True
            raise StreamIntegrityError("chunk count mismatch")
        self._final = final
        return final

    @property
    def finished(self) -> bool:
        return self._final is not None

    def close(self) -> None:
        """Call at end of input: raises if the final frame never arrived (truncation)."""
        if self._final is None:
            self._broken = True
            raise StreamIntegrityError("stream ended without its final frame (truncated)")


class ServerSession:
    """What an instance keeps after opening a request: keys bound to that request."""

    __slots__ = ("_keys",)

    def __init__(self, keys: _Keys) -> None:
        self._keys = keys

    def seal_response(self, payload: dict[str, Any]) -> bytes:
        """Encrypt the (single) non-stream response."""
        plain = _payload.dump(payload)
        return Aead(self._keys.resp).seal(_ZERO_NONCE, plain, b"response" + self._keys.binding)

    def stream_sealer(self) -> StreamSealer:
        return StreamSealer(self._keys)


class ClientSession:
    """What a client keeps after sealing a request, to open its response."""

    __slots__ = ("_keys",)

    def __init__(self, keys: _Keys) -> None:
        self._keys = keys

    def open_response(self, blob: bytes) -> dict[str, Any]:
        """Decrypt the non-stream response; fails for any response not made for this request."""
        _payload.check_envelope_size(blob)
        if len(blob) < TAG_SIZE:
            raise EnvelopeFormatError("v2 response is too short")
        plain = Aead(self._keys.resp).open(_ZERO_NONCE, blob, b"response" + self._keys.binding)
        return _payload.load(plain)

    def stream_opener(self) -> StreamOpener:
        return StreamOpener(self._keys)


def seal_request(
    instance_pk: bytes, ctx: RequestContext, payload: dict[str, Any] | bytes
) -> tuple[bytes, ClientSession]:
    """Client: encrypt ``payload`` for ``ctx``; returns the body and the session for the response."""
    aad = ctx.aad()
    kem_ct, secret = _kem.encapsulate(instance_pk)
    keys = _Keys(secret, kem_ct, aad)
    sealed = Aead(keys.req).seal(_ZERO_NONCE, _payload.dump(payload), aad)
    return VERSION_BYTE + kem_ct + sealed, ClientSession(keys)


def open_request(
    instance_key: KeyPair, ctx: RequestContext, blob: bytes
) -> tuple[dict[str, Any], ServerSession]:
    """Instance: decrypt a request made for ``ctx``; returns the payload and the session."""
    raw, session = open_request_raw(instance_key, ctx, blob)
    return _payload.parse(raw), session


def open_request_raw(instance_key: KeyPair, ctx: RequestContext, blob: bytes) -> tuple[bytes, ServerSession]:
    """Like :func:`open_request` but returns the decompressed payload bytes unparsed."""
    _payload.check_envelope_size(blob)
    if len(blob) < _HEADER + TAG_SIZE:
        raise EnvelopeFormatError("v2 envelope is too short")
    if blob[:1] != VERSION_BYTE:
        raise EnvelopeFormatError("not a v2 envelope")
    aad = ctx.aad()
    kem_ct = blob[1:_HEADER]
    keys = _Keys(instance_key.decapsulate(kem_ct), kem_ct, aad)
    plain = Aead(keys.req).open(_ZERO_NONCE, blob[_HEADER:], aad)
    return _payload.inflate(plain), ServerSession(keys)


def request_kem_ciphertext(blob: bytes) -> bytes:
    """The KEM ciphertext of a v2 request envelope (what identifies its key schedule)."""
    if len(blob) < _HEADER or blob[:1] != VERSION_BYTE:
        raise EnvelopeFormatError("not a v2 envelope")
    return blob[1:_HEADER]
