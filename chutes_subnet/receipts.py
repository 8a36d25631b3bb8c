"""Signed answer receipts: the instance's own statement of what it answered and billed.

Each instance generates an Ed25519 **receipt key** next to its ML-KEM key inside the
TEE; its public half is bound into the attestation's report_data
(:mod:`chutes_subnet.attestation.verify.binding`, layout v2). For every answer the instance
signs a receipt; the gateway verifies it with the attested key from the registry and
bills only verified receipts, and the client verifies the same receipt and hands it
to the application. A host that rewrites usage, or swaps the answer, breaks the
signature or the hash. Wire form (one base64 string: the ``X-E2E-Receipt`` header of
a non-stream answer, the last SSE event ``data: {"e2e_receipt":"..."}`` of a stream)::

    body      = 0x01                                   version
              ‖ request_binding[32]                    request_binding(kem_ct, AAD)
              ‖ answer_sha256[32]                      SHA-256 of the exact answer bytes
              ‖ prompt_tokens[4 BE] ‖ completion_tokens[4 BE]
              ‖ issued_at_ms[8 BE]                     instance clock, ms since the epoch
              ‖ len(instance_id)[1] ‖ instance_id      ASCII, 1..128 bytes
    signature = Ed25519(receipt key, "chutes-subnet receipt v1" ‖ 0x00 ‖ body)
    wire      = base64(body ‖ signature)

``request_binding = SHA256(SHA256(kem_ct) ‖ SHA256(AAD))`` where ``AAD`` is
:meth:`RequestContext.aad` of the routing context (for v1 too, whose envelope has no
AAD): the gateway computes it from the body and headers it forwarded, so a receipt
cannot be replayed for another request. The answer bytes are the response body
(non-stream) or every byte of the SSE stream before the receipt event (stream).
Usage values are unsigned 32-bit integers by construction.

:func:`verify` checks, in order: shape, signature, request binding, answer hash,
instance id, age; each failure is a :class:`~chutes_subnet.errors.ReceiptError` with
its reason code. Pure functions; the clock is an argument. Signatures are checked
with libsodium's ``crypto_sign_open`` (PyNaCl): half the CPU of OpenSSL's Ed25519 on
the gateway's hot path, it releases the GIL, and it is stricter (besides a
non-canonical ``S`` it refuses small-order and non-canonical public keys and ``R``).
Signing uses ``cryptography``. No cipher, KEM or KDF is loaded: the gateway verifies
receipts and must hold nothing that could decrypt.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from chutes_subnet.errors import ReceiptError
from chutes_subnet.wire.context import RequestContext
from chutes_subnet.wire.protocol import request_kem_ciphertext

__all__ = [
    "EVENT_PREFIX",
    "MAX_TOKENS",
    "MAX_WIRE_CHARS",
    "PUBLIC_KEY_SIZE",
    "Receipt",
    "ReceiptSigner",
    "ReceiptTap",
    "decode_public_key",
    "request_binding",
    "request_binding_for",
    "event",
    "verify",
]

VERSION = 1
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
MAX_TOKENS = 0xFFFFFFFF
MAX_INSTANCE_ID = 128
_DOMAIN = b"chutes-subnet receipt v1\x00"
_FIXED = 1 + 32 + 32 + 4 + 4 + 8 + 1
_MAX_BODY = _FIXED + MAX_INSTANCE_ID
#: Longest valid wire string (base64 of the longest body plus signature).
MAX_WIRE_CHARS = 4 * ((_MAX_BODY + SIGNATURE_SIZE + 2) // 3)
#: How a stream's receipt event starts (and its line is exactly this + base64 + '"}').
EVENT_PREFIX = b'data: {"e2e_receipt":"'
_MARKER = b'{"e2e_receipt"'
_EVENT_SUFFIX = b'"}'


def request_binding(kem_ct: bytes, aad: bytes) -> bytes:
    """The 32-byte name of one request: ``SHA256(SHA256(kem_ct) ‖ SHA256(aad))``."""
    return hashlib.sha256(hashlib.sha256(kem_ct).digest() + hashlib.sha256(aad).digest()).digest()


def request_binding_for(version: int, body: bytes, ctx: RequestContext) -> bytes:
    """:func:`request_binding` of a request envelope as sent with these routing headers."""
    return request_binding(request_kem_ciphertext(version, body), ctx.aad())


def event(wire: str) -> bytes:
    """The SSE event that carries a stream's receipt (what :class:`ReceiptTap` finds)."""
    return EVENT_PREFIX + wire.encode("ascii") + _EVENT_SUFFIX + b"\n\n"


@dataclass(frozen=True, slots=True)
class Receipt:
    """A verified receipt (or, from :meth:`ReceiptSigner.sign`, one just made)."""

    request_binding: bytes
    answer_sha256: bytes
    prompt_tokens: int
    completion_tokens: int
    issued_at_ms: int
    instance_id: str
    wire: str

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view for applications and audit logs."""
        return {"instance_id": self.instance_id, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "total_tokens": self.total_tokens,
                "issued_at_ms": self.issued_at_ms, "request_binding": self.request_binding.hex(),
                "answer_sha256": self.answer_sha256.hex(), "receipt": self.wire}


def _body(binding: bytes, answer_sha256: bytes, prompt: int, completion: int, issued_at_ms: int,
          instance_id: str) -> bytes:
    if len(binding) != 32 or len(answer_sha256) != 32:
        raise ValueError("request binding and answer hash must be 32 bytes")
    for n in (prompt, completion):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_TOKENS:
            raise ValueError(f"token counts must be integers in 0..{MAX_TOKENS}")
    if not 0 <= issued_at_ms < 1 << 64:
        raise ValueError("issued_at_ms out of range")
    ident = instance_id.encode("ascii")
    if not 1 <= len(ident) <= MAX_INSTANCE_ID:
        raise ValueError(f"instance_id must be 1..{MAX_INSTANCE_ID} ASCII bytes")
    return b"".join((bytes((VERSION,)), binding, answer_sha256, prompt.to_bytes(4, "big"),
                     completion.to_bytes(4, "big"), issued_at_ms.to_bytes(8, "big"),
                     bytes((len(ident),)), ident))


class ReceiptSigner:
    """The instance's receipt key. Lives in memory only; never serialised or logged."""

    __slots__ = ("_sk", "public_bytes")

    def __init__(self, sk: Ed25519PrivateKey) -> None:
        self._sk = sk
        self.public_bytes = sk.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> ReceiptSigner:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_b64(self) -> str:
        return binascii.b2a_base64(self.public_bytes, newline=False).decode("ascii")

    def sign(self, *, request_binding: bytes, answer_sha256: bytes, prompt_tokens: int,
             completion_tokens: int, instance_id: str, issued_at_ms: int) -> str:
        """The wire receipt for one answer (``ValueError`` on out-of-range inputs)."""
        body = _body(request_binding, answer_sha256, prompt_tokens, completion_tokens,
                     issued_at_ms, instance_id)
        sig = self._sk.sign(_DOMAIN + body)
        return binascii.b2a_base64(body + sig, newline=False).decode("ascii")

    def __repr__(self) -> str:
        return f"ReceiptSigner(Ed25519, pub={self.public_bytes.hex()[:16]})"

    def __reduce__(self):  # refuse pickling: the private key must never leave memory
        raise TypeError("ReceiptSigner cannot be serialised")


def decode_public_key(b64: str) -> bytes:
    """Strictly decode a base64 Ed25519 receipt public key (``ValueError`` if malformed)."""
    try:
        raw = binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("receipt public key is not valid base64") from None
    if len(raw) != PUBLIC_KEY_SIZE:
        raise ValueError("receipt public key must be 32 bytes")
    return raw


def _parse(wire: str | bytes) -> tuple[bytes, bytes]:
    if not isinstance(wire, (str, bytes)) or not 0 < len(wire) <= MAX_WIRE_CHARS:
        raise ReceiptError("malformed", "receipt is missing or too long")
    try:
        raw = binascii.a2b_base64(wire, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ReceiptError("malformed", "receipt is not valid base64") from None
    if len(raw) < _FIXED + 1 + SIGNATURE_SIZE or raw[0] != VERSION:
        raise ReceiptError("malformed", "receipt has the wrong size or version")
    body, sig = raw[:-SIGNATURE_SIZE], raw[-SIGNATURE_SIZE:]
    if len(body) != _FIXED + body[_FIXED - 1]:
        raise ReceiptError("malformed", "receipt length does not match its instance id")
    return body, sig


def verify(wire: str | bytes | None, public_key: bytes | None, *, request_binding: bytes,
           answer_sha256: bytes, instance_id: str | None = None, now_ms: int | None = None,
           max_age_ms: int = 15 * 60 * 1000, max_skew_ms: int = 5 * 60 * 1000) -> Receipt:
    """Check ``wire`` against the attested key and what the verifier itself saw.

    ``request_binding`` and ``answer_sha256`` come from the verifier's own copy of the
    request and answer bytes, never from the receipt. With ``now_ms`` the receipt must be
    issued within ``[now - max_age_ms, now + max_skew_ms]``.
    """
    if wire is None or wire == "":
        raise ReceiptError("missing", "answer carries no receipt")
    if public_key is None or len(public_key) != PUBLIC_KEY_SIZE:
        raise ReceiptError("no_key", "no attested receipt key for this instance")
    body, sig = _parse(wire)
    try:
        crypto_sign_open(sig + _DOMAIN + body, bytes(public_key))
    except (CryptoError, ValueError, TypeError):
        raise ReceiptError("bad_signature", "receipt signature does not verify") from None
    if not hmac.compare_digest(body[1:33], request_binding):
        raise ReceiptError("wrong_request", "receipt names another request")
    if not hmac.compare_digest(body[33:65], answer_sha256):
        raise ReceiptError("wrong_answer", "receipt is for other answer bytes")
    try:
        ident = body[_FIXED:].decode("ascii")
    except UnicodeDecodeError:
        raise ReceiptError("malformed", "receipt instance id is not ASCII") from None
    if instance_id is not None and not hmac.compare_digest(ident.encode(), instance_id.encode()):
        raise ReceiptError("wrong_instance", "receipt is from another instance")
    issued = int.from_bytes(body[73:81], "big")
    if now_ms is not None and not now_ms - max_age_ms <= issued <= now_ms + max_skew_ms:
        raise ReceiptError("stale", "receipt time is outside the accepted window")
    return Receipt(request_binding=body[1:33], answer_sha256=body[33:65],
                   prompt_tokens=int.from_bytes(body[65:69], "big"),
                   completion_tokens=int.from_bytes(body[69:73], "big"),
                   issued_at_ms=issued, instance_id=ident,
                   wire=wire if isinstance(wire, str) else wire.decode("ascii"))


class ReceiptTap:
    """Feed a stream's bytes in order: hashes them up to the receipt event and extracts it.

    Memory is bounded: at most one partial line that may still become the receipt event
    (:data:`MAX_WIRE_CHARS` plus the event's wrapper) is held back; everything else is
    hashed as it passes. Bytes after the receipt event are not hashed.
    """

    __slots__ = ("_hash", "_partial", "_skipping", "answer_bytes", "receipt")

    _MAX_LINE = len(EVENT_PREFIX) + MAX_WIRE_CHARS + len(_EVENT_SUFFIX) + 2

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._partial = b""
        self._skipping = False
        #: the receipt's wire string once its event line was seen (unverified)
        self.receipt: str | None = None
        #: how many bytes were hashed (the answer before the receipt event)
        self.answer_bytes = 0

    def _take(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self.answer_bytes += len(data)

    def feed(self, chunk: bytes) -> None:
        """Scan the next bytes of the stream."""
        if self.receipt is not None:
            return
        if not self._partial and not self._skipping:
            # fast path: hash whole lines at once when none of them can be the receipt event
            # (its marker holds no newline, so it lies within the complete lines or after)
            last = chunk.rfind(b"\n") + 1
            if last and chunk.find(_MARKER, 0, last) < 0:
                self._take(chunk[:last] if last < len(chunk) else chunk)
                chunk = chunk[last:]
        pos, n = 0, len(chunk)
        while pos < n and self.receipt is None:
            nl = chunk.find(b"\n", pos)
            end = n if nl < 0 else nl + 1
            if self._skipping:  # inside a line known not to be the receipt: hash as it goes
                self._take(chunk[pos:end])
                self._skipping = nl < 0
                pos = end
                continue
            line = self._partial + chunk[pos:end]
            head = line[: len(EVENT_PREFIX)]
            if EVENT_PREFIX.startswith(head) and len(line) <= self._MAX_LINE:
                if nl < 0:
                    self._partial = line  # maybe the receipt: decide when the line ends
                    return
                self._partial = b""
                if len(line) > len(EVENT_PREFIX):
                    self._receipt_line(line)
                    return
            self._partial = b""
            self._take(line)
            self._skipping = nl < 0
            pos = end

    def close(self) -> None:
        """End of input: a receipt event cut before its newline still counts."""
        if self.receipt is None and len(self._partial) > len(EVENT_PREFIX):
            self._receipt_line(self._partial)
        elif self._partial:
            self._take(self._partial)
        self._partial = b""

    def _receipt_line(self, line: bytes) -> None:
        body = line.rstrip(b"\r\n")
        if body.endswith(_EVENT_SUFFIX):
            value = body[len(EVENT_PREFIX) : -len(_EVENT_SUFFIX)]
            self.receipt = value.decode("ascii", "replace")
        else:
            self.receipt = ""  # an event that claims to be the receipt but is malformed

    @property
    def answer_sha256(self) -> bytes:
        """SHA-256 of the bytes before the receipt event (all bytes if none was seen)."""
        return self._hash.digest()
