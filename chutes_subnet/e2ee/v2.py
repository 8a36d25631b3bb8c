"""Protocol v2: the hardened envelope (negotiated with ``X-E2E-Version: 2``).

Request (client -> instance)::

    0x02 || kem_ct (1088) || ChaCha20-Poly1305(key_req, nonce=0^12, plaintext, aad=AAD_req) || tag (16)

``AAD_req = RequestContext.aad()`` (see :mod:`chutes_subnet.wire.context`) binds the
version, chute id, instance id, gateway nonce, invoked path, stream flag and padding
scheme: a router that swaps or strips any of them makes decryption fail.

Plaintext (request and non-stream response), by the context's padding scheme
(:mod:`chutes_subnet.e2ee._padding`, :mod:`chutes_subnet.e2ee._codec`)::

    PADDING_PADME (default): len(JSON)[4 BE] || JSON || zeros to the Padmé bucket
    PADDING_NONE           : one gzip member (stored blocks) holding the JSON

Key schedule (one ML-KEM encapsulation per request, HPKE-style)::

    prk        = HKDF-Extract(salt = SHA256(kem_ct), ikm = shared secret)
    key_req    = HKDF-Expand(prk, "chutes-e2ee/v2 request",  32)
    key_resp   = HKDF-Expand(prk, "chutes-e2ee/v2 response", 32)
    key_stream = HKDF-Expand(prk, "chutes-e2ee/v2 stream",   32)
    binding    = SHA256(kem_ct) || SHA256(AAD_req)

Each key encrypts under its own nonce space: the request and the non-stream response
are single messages (nonce 0). Responses are therefore bound to exactly one request
(a response replayed from another request does not authenticate) and their AAD also
carries ``binding``. ``key_resp`` and ``key_stream`` are expanded only when used (a
call needs one of them), which saves an HMAC per side.

Stream frames (base64 of ``ct || tag``, nonce never sent)::

    chunk i : nonce = 0x00 || i (11 bytes BE),  aad = "chunk" || binding
    final   : nonce = 0x01 || n (11 bytes BE),  aad = "final" || binding,
              content = JSON {"chunks": n, "usage": {...} | null}

With padding a frame's plaintext is one or more length-prefixed SSE lines padded to a
multiple of 512 bytes (the final frame's JSON likewise); without padding it is one
line (or the final JSON) as is. A dropped, duplicated or reordered chunk fails
authentication at the next frame; a stream without a valid final frame (truncation)
fails at ``close``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from chutes_subnet.e2ee import _b64, _json, _kem, _padding, _payload
from chutes_subnet.e2ee._symmetric import TAG_SIZE, hmac_sha256, open_, seal
from chutes_subnet.e2ee.keys import KeyPair
from chutes_subnet.errors import EnvelopeFormatError, StreamIntegrityError
from chutes_subnet.wire.context import PADDING_NONE, PADDING_PADME, RequestContext

__all__ = [
    "FRAME_CAPACITY",
    "PADDING_NONE",
    "PADDING_PADME",
    "VERSION_BYTE",
    "ClientSession",
    "ServerSession",
    "StreamOpener",
    "StreamSealer",
    "line_cost",
    "open_request",
    "open_request_raw",
    "seal_request",
]

VERSION_BYTE = b"\x02"
_ZERO_NONCE = bytes(12)
_LABEL_REQ = b"chutes-e2ee/v2 request"
_LABEL_RESP = b"chutes-e2ee/v2 response"
_LABEL_STREAM = b"chutes-e2ee/v2 stream"
# HKDF-Expand to one 32-byte key is T(1) = HMAC(prk, info || 0x01) (_symmetric.hkdf_expand)
_T1_REQ, _T1_RESP, _T1_STREAM = (label + b"\x01" for label in (_LABEL_REQ, _LABEL_RESP,
                                                                 _LABEL_STREAM))
_HEADER = 1 + _kem.CIPHERTEXT_SIZE
_MAX_FRAMES = 1 << 88
_FINAL_FLAG = 1 << 88
#: line-record bytes one padded frame holds without growing past its bucket
FRAME_CAPACITY = _padding.FRAME_BUCKET
_b64encode = _b64.encode
_b64decode = _b64.decode
_pack_line = _padding.pack_line
_unpack_lines = _padding.unpack_lines


class _Keys:
    """The request's PRK and binding; response and stream keys expanded on first use."""

    __slots__ = ("_resp", "_stream", "binding", "padded", "prk")

    def __init__(self, secret: bytes, kem_ct: bytes, aad: bytes, padded: bool) -> None:
        ct_hash = hashlib.sha256(kem_ct).digest()
        self.prk = hmac_sha256(ct_hash, secret)  # HKDF-Extract(salt = ct_hash, ikm = secret)
        self.binding = ct_hash + hashlib.sha256(aad).digest()
        self.padded = padded
        self._resp: bytes | None = None
        self._stream: bytes | None = None

    @property
    def req(self) -> bytes:
        return hmac_sha256(self.prk, _T1_REQ)

    @property
    def resp(self) -> bytes:
        if self._resp is None:
            self._resp = hmac_sha256(self.prk, _T1_RESP)
        return self._resp

    @property
    def stream(self) -> bytes:
        if self._stream is None:
            self._stream = hmac_sha256(self.prk, _T1_STREAM)
        return self._stream

    @property
    def request_binding(self) -> bytes:
        """SHA256(binding): what a receipt names the request by (:mod:`.receipts`)."""
        return hashlib.sha256(self.binding).digest()


def line_cost(line: bytes) -> int:
    """What ``line`` takes of a padded frame's :data:`FRAME_CAPACITY` (its record)."""
    return _padding.RECORD_OVERHEAD + len(line)


def _final_body(n: int, usage: dict[str, Any] | None, padded: bool) -> bytes:
    body = _json.dumps({"chunks": n, "usage": usage})
    return _padding.pack_lines([body]) if padded else body


class StreamSealer:
    """Instance side of a v2 stream: counter nonces and an authenticated final frame."""

    __slots__ = ("_chunk_aad", "_done", "_encrypt", "_final_aad", "_n", "_padded")

    def __init__(self, keys: _Keys) -> None:
        self._encrypt = ChaCha20Poly1305(keys.stream).encrypt
        self._chunk_aad = b"chunk" + keys.binding
        self._final_aad = b"final" + keys.binding
        self._padded = keys.padded
        self._n = 0
        self._done = False

    @property
    def padded(self) -> bool:
        return self._padded

    def seal_lines(self, lines: list[bytes]) -> bytes:
        """Encrypt the next frame holding ``lines``; returns its base64 (ASCII bytes).

        Several lines (coalesced tokens) need padding; unpadded frames hold one line.
        """
        if self._done:
            raise EnvelopeFormatError("stream already finished")
        if self._padded:
            data = _padding.pack_lines(lines)
        elif len(lines) == 1:
            data = lines[0]
        else:
            raise EnvelopeFormatError("coalescing lines needs a padded stream")
        n = self._n
        if n >= _MAX_FRAMES:
            raise EnvelopeFormatError("too many stream frames")
        frame = self._encrypt(n.to_bytes(12, "big"), data, self._chunk_aad)
        self._n = n + 1
        return _b64encode(frame)

    def seal_line(self, data: bytes) -> bytes:
        """Encrypt the next frame holding one line; returns its base64 (the per-token path)."""
        n = self._n
        if self._done or n >= _MAX_FRAMES:
            raise EnvelopeFormatError("stream already finished or out of frames")
        if self._padded:
            data = _pack_line(data)
        self._n = n + 1
        return _b64encode(self._encrypt(n.to_bytes(12, "big"), data, self._chunk_aad))

    def seal(self, data: bytes) -> str:
        """Encrypt the next chunk (one line); returns the base64 frame as text."""
        return self.seal_line(data).decode("ascii")

    def finish(self, usage: dict[str, Any] | None = None) -> str:
        """The final frame: authenticates the chunk count (and the usage, if given)."""
        if self._done:
            raise EnvelopeFormatError("stream already finished")
        self._done = True
        body = _final_body(self._n, usage, self._padded)
        frame = self._encrypt((_FINAL_FLAG | self._n).to_bytes(12, "big"), body, self._final_aad)
        return _b64encode(frame).decode("ascii")


class StreamOpener:
    """Client side of a v2 stream. Every failure is a :class:`StreamIntegrityError`."""

    __slots__ = ("_broken", "_chunk_aad", "_decrypt", "_final", "_final_aad", "_n", "_padded")

    def __init__(self, keys: _Keys) -> None:
        self._decrypt = ChaCha20Poly1305(keys.stream).decrypt
        self._chunk_aad = b"chunk" + keys.binding
        self._final_aad = b"final" + keys.binding
        self._padded = keys.padded
        self._n = 0
        self._final: dict[str, Any] | None = None
        self._broken = False

    def _check_open(self) -> None:
        if self._broken:
            raise StreamIntegrityError("stream already failed verification")
        if self._final is not None:
            raise StreamIntegrityError("data after the final frame")

    def _fail(self, message: str) -> StreamIntegrityError:
        self._broken = True
        return StreamIntegrityError(message)

    def open_lines(self, frame_b64: str | bytes) -> list[bytes]:
        """Decrypt the next frame in order; returns the line(s) it carries."""
        if self._broken or self._final is not None:
            self._check_open()
        try:  # (a frame shorter than the tag is an InvalidTag too)
            data = self._decrypt(self._n.to_bytes(12, "big"), _b64decode(frame_b64),
                                 self._chunk_aad)
        except (InvalidTag, ValueError, TypeError):  # binascii.Error is a ValueError: one failure
            raise self._fail("stream chunk failed authentication (tampered, reordered or dropped)") from None
        self._n += 1
        if not self._padded:
            return [data]
        try:
            return _unpack_lines(data)
        except EnvelopeFormatError:
            raise self._fail("stream chunk is not a well-formed padded frame") from None

    def open(self, frame_b64: str | bytes) -> bytes:
        """Decrypt the next frame in order; several coalesced lines come back joined by a blank line."""
        return b"\n\n".join(self.open_lines(frame_b64))

    def open_final(self, frame_b64: str | bytes) -> dict[str, Any]:
        """Verify the final frame; returns ``{"chunks": n, "usage": ...}``."""
        self._check_open()
        try:
            sealed = _b64decode(frame_b64)
            body = self._decrypt((_FINAL_FLAG | self._n).to_bytes(12, "big"), sealed, self._final_aad)
            if self._padded:
                (body,) = _padding.unpack_lines(body)
            final = _json.loads(body)
        except (InvalidTag, ValueError, TypeError, EnvelopeFormatError):  # one failure
            raise self._fail("final frame failed authentication (stream truncated or tampered)") from None
        if not isinstance(final, dict) or final.get("chunks") != self._n:
            raise self._fail("chunk count mismatch")
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

    @property
    def padded(self) -> bool:
        return self._keys.padded

    @property
    def request_binding(self) -> bytes:
        """The 32-byte request binding a receipt for this request carries."""
        return self._keys.request_binding

    def seal_response(self, payload: dict[str, Any] | bytes) -> bytes:
        """Encrypt the (single) non-stream response."""
        plain = _payload.encode(payload, self._keys.padded)
        return seal(self._keys.resp, _ZERO_NONCE, plain, b"response" + self._keys.binding)

    def stream_sealer(self) -> StreamSealer:
        return StreamSealer(self._keys)


class ClientSession:
    """What a client keeps after sealing a request, to open its response."""

    __slots__ = ("_keys",)

    def __init__(self, keys: _Keys) -> None:
        self._keys = keys

    @property
    def request_binding(self) -> bytes:
        """The 32-byte request binding the instance's receipt must carry."""
        return self._keys.request_binding

    def open_response(self, blob: bytes) -> dict[str, Any]:
        """Decrypt the non-stream response; fails for any response not made for this request."""
        _payload.check_envelope_size(blob)
        if len(blob) < TAG_SIZE:
            raise EnvelopeFormatError("v2 response is too short")
        plain = open_(self._keys.resp, _ZERO_NONCE, blob, b"response" + self._keys.binding)
        return _payload.parse_plaintext(plain, self._keys.padded)

    def stream_opener(self) -> StreamOpener:
        return StreamOpener(self._keys)


def seal_request(
    instance_pk: bytes, ctx: RequestContext, payload: dict[str, Any] | bytes
) -> tuple[bytes, ClientSession]:
    """Client: encrypt ``payload`` for ``ctx``; returns the body and the session for the response."""
    aad = ctx.aad()
    plain = _payload.encode(payload, ctx.padded)
    kem_ct, secret = _kem.encapsulate(instance_pk)
    keys = _Keys(secret, kem_ct, aad, ctx.padded)
    sealed = seal(keys.req, _ZERO_NONCE, plain, aad)
    return b"".join((VERSION_BYTE, kem_ct, sealed)), ClientSession(keys)


def open_request(
    instance_key: KeyPair, ctx: RequestContext, blob: bytes
) -> tuple[dict[str, Any], ServerSession]:
    """Instance: decrypt a request made for ``ctx``; returns the payload and the session."""
    plain, keys = _open_request(instance_key, ctx, blob)
    return _payload.parse_plaintext(plain, keys.padded), ServerSession(keys)


def open_request_raw(
    instance_key: KeyPair, ctx: RequestContext, blob: bytes
) -> tuple[bytes | memoryview, ServerSession]:
    """Like :func:`open_request` but returns the payload's JSON bytes unparsed (padded
    payloads come back as a memoryview over the plaintext: no copy)."""
    plain, keys = _open_request(instance_key, ctx, blob)
    return _payload.decode(plain, keys.padded), ServerSession(keys)


def _open_request(instance_key: KeyPair, ctx: RequestContext, blob: bytes) -> tuple[bytes, _Keys]:
    """The request's plaintext and keys (checks size and version before any crypto)."""
    _payload.check_envelope_size(blob)
    if len(blob) < _HEADER + TAG_SIZE:
        raise EnvelopeFormatError("v2 envelope is too short")
    if blob[:1] != VERSION_BYTE:
        raise EnvelopeFormatError("not a v2 envelope")
    aad = ctx.aad()
    view = memoryview(blob)
    kem_ct = bytes(view[1:_HEADER])
    keys = _Keys(instance_key.decapsulate(kem_ct), kem_ct, aad, ctx.padded)
    return open_(keys.req, _ZERO_NONCE, view[_HEADER:], aad), keys
