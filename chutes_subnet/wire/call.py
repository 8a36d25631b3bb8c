"""One sealed invoke, caller side: seal the request, open the JSON or SSE answer.

Used by the client transports and by the validator's benchmark, so both speak the
envelope exactly the same way.

:func:`seal_call` encrypts an OpenAI request body to one instance with the chosen
E2EE version and builds the invoke headers (:class:`~chutes_subnet.wire.headers.
InvokeHeaders`). :class:`StreamDecoder` turns the encrypted SSE stream back into the
stream the instance produced, event by event, as bytes arrive:

* v1: ``e2e_init`` sets the stream key, each ``e2e`` event yields one SSE line;
* v2: each ``e2e`` frame must open with the next counter, ``e2e_final`` must carry
  the right chunk count, and the stream must not end (or say ``[DONE]``) without it —
  so a middle box that drops, reorders, duplicates or truncates is detected
  (:class:`~chutes_subnet.errors.StreamIntegrityError`).

Receipts (:mod:`chutes_subnet.receipts`): when the target's attested receipt key is
known, :meth:`SealedCall.verify_receipt` checks a non-stream answer's ``X-E2E-Receipt``
and the decoder checks a stream's ``e2e_receipt`` event over the exact bytes before it
when ``[DONE]`` arrives (:attr:`StreamDecoder.receipt`); a missing or wrong receipt is a
:class:`~chutes_subnet.errors.ReceiptError`. Plaintext ``usage`` events (v1) are not
handed on: they are not authenticated, and in v2 the authenticated copy is inside the
final frame (:attr:`StreamDecoder.final_usage`). ``e2e_error`` becomes ``data: {"error": ...}``,
which the OpenAI SDK raises as an ``APIError`` (and :attr:`StreamDecoder.error`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chutes_subnet import receipts
from chutes_subnet.e2ee import PADDING_NONE, PADDING_PADME, v1, v2
from chutes_subnet.errors import EnvelopeFormatError, StreamIntegrityError
from chutes_subnet.sse import DONE, SSEParser
from chutes_subnet.wire.headers import H_AUTHORIZATION, InvokeHeaders
from chutes_subnet.wire.messages import DiscoveredInstance
from chutes_subnet.wire.protocol import E2EE_VERSION_V1, E2EE_VERSION_V2, parse_json

__all__ = ["SealTarget", "SealedCall", "StreamDecoder", "seal_call", "choose_version"]

_DONE_LINE = b"data: " + DONE.encode()
_FRAME_OPEN = '{"e2e":"'


@dataclass(frozen=True)
class SealTarget:
    """What a caller needs to seal to one instance: its id, E2EE key and versions."""

    instance_id: str
    e2e_pubkey: bytes
    e2e_versions: tuple[int, ...] = (E2EE_VERSION_V1,)
    #: the attested Ed25519 key of the instance's receipts (None: unknown, not checked)
    receipt_pubkey: bytes | None = None

    @classmethod
    def from_discovery(cls, entry: DiscoveredInstance) -> SealTarget:
        """From a discovery entry; a key that is not base64 is an EnvelopeFormatError."""
        try:
            key = base64.b64decode(entry.e2e_pubkey, validate=True)
            receipt_key = (receipts.decode_public_key(entry.receipt_pubkey)
                           if entry.receipt_pubkey else None)
        except (binascii.Error, ValueError):
            raise EnvelopeFormatError("instance key in discovery answer is not base64") from None
        return cls(entry.instance_id, key, tuple(entry.e2e_versions), receipt_key)


def choose_version(target: SealTarget, preferred: tuple[int, ...]) -> int | None:
    """First version in ``preferred`` the instance speaks, or None."""
    return next((v for v in preferred if v in target.e2e_versions), None)


@dataclass
class SealedCall:
    """A sealed request plus what is needed to open its answer."""

    body: bytes
    headers: dict[str, str]
    version: int
    session: Any  # v2.ClientSession | v1.ResponseKey
    #: what the instance's receipt must name this request by
    request_binding: bytes = b""
    instance_id: str = ""
    receipt_pubkey: bytes | None = None

    def verify_receipt(self, wire: str | bytes | None, answer: bytes) -> receipts.Receipt | None:
        """Check the receipt of the answer bytes ``answer``; None when no key is known.

        Raises :class:`~chutes_subnet.errors.ReceiptError` (missing, forged, rewritten,
        or for other bytes)."""
        return self._check_receipt(wire, hashlib.sha256(answer).digest())

    def _check_receipt(self, wire: str | bytes | None, answer_sha256: bytes,
                       ) -> receipts.Receipt | None:
        if self.receipt_pubkey is None:
            return None
        return receipts.verify(wire, self.receipt_pubkey, request_binding=self.request_binding,
                               answer_sha256=answer_sha256, instance_id=self.instance_id,
                               now_ms=int(time.time() * 1000))

    def open_json(self, blob: bytes) -> dict[str, Any]:
        """Decrypt a non-stream answer."""
        if self.version == E2EE_VERSION_V2:
            opened: dict[str, Any] = self.session.open_response(blob)
            return opened
        return v1.open_response(self.session, blob)

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for this call's SSE answer (checking its receipt when a key is known)."""
        check = self._check_receipt if self.receipt_pubkey is not None else None
        return StreamDecoder(self.version, self.session, receipt_check=check)


def seal_call(target: SealTarget, *, chute_id: str, nonce: str, path: str, stream: bool,
              payload: dict[str, Any], version: int, api_key: str | None = None,
              padding: int = PADDING_PADME) -> SealedCall:
    """Encrypt ``payload`` for ``target`` and build the ``/e2e/invoke`` headers
    (with ``Authorization: Bearer`` when ``api_key`` is given). v2 is padded unless
    ``padding=PADDING_NONE``; v1 never is."""
    routing = InvokeHeaders(chute_id, target.instance_id, nonce, path, stream, version,
                            version_explicit=version != E2EE_VERSION_V1,
                            padding=padding if version == E2EE_VERSION_V2 else PADDING_NONE)
    headers = routing.to_headers()
    if api_key is not None:
        headers[H_AUTHORIZATION] = f"Bearer {api_key}"
    if version == E2EE_VERSION_V2:
        body, session = v2.seal_request(target.e2e_pubkey, routing.context(), payload)
        return SealedCall(body, headers, version, session, session.request_binding,
                          target.instance_id, target.receipt_pubkey)
    if version == E2EE_VERSION_V1:
        body, key = v1.seal_request(target.e2e_pubkey, payload)
        binding = receipts.request_binding_for(version, body, routing.context())
        return SealedCall(body, headers, version, key, binding, target.instance_id,
                          target.receipt_pubkey)
    raise ValueError(f"unsupported E2EE version {version}")


class StreamDecoder:
    """Incremental decryption of one E2EE SSE answer.

    :meth:`lines` / :meth:`finish_lines` return the instance's own SSE lines
    (``data: ...`` without the blank line); :meth:`feed` / :meth:`finish` return them
    as SSE bytes for an HTTP client.
    """

    def __init__(self, version: int, session: Any,
                 receipt_check: Callable[[str | None, bytes], receipts.Receipt | None] | None = None,
                 ) -> None:
        self._parser = SSEParser()
        self._tap = receipts.ReceiptTap() if receipt_check is not None else None
        self._receipt_check = receipt_check
        #: the verified receipt, once ``[DONE]`` arrived (None without a receipt key)
        self.receipt: receipts.Receipt | None = None
        self._v1 = v1.StreamOpener(session) if version == E2EE_VERSION_V1 else None
        self._v2 = session.stream_opener() if version == E2EE_VERSION_V2 else None
        self._ended = False
        #: True once ``[DONE]`` arrived (in order).
        self.done = False
        #: The reason of an ``e2e_error`` event, if the instance sent one.
        self.error: str | None = None
        #: v2: the usage authenticated by the final frame (as the instance sent it).
        self.final_usage: Any = None

    def feed(self, chunk: bytes) -> bytes:
        """Decrypt what ``chunk`` completes; returns plaintext SSE bytes (maybe empty)."""
        return b"".join(line + b"\n\n" for line in self.lines(chunk))

    def finish(self) -> bytes:
        """End of input: flush, and for v2 require the final frame."""
        return b"".join(line + b"\n\n" for line in self.finish_lines())

    def lines(self, chunk: bytes) -> list[bytes]:
        """The plaintext SSE lines ``chunk`` completes."""
        if self._tap is not None:
            self._tap.feed(chunk)
        return [line for data in self._parser.feed(chunk) for line in self._event(data)]

    def finish_lines(self) -> list[bytes]:
        """End of input: the last lines; for v2 raises unless the final frame arrived."""
        out = [line for data in self._parser.close() for line in self._event(data)]
        if self._v2 is not None and not self._ended:
            self._v2.close()  # raises StreamIntegrityError unless the final frame arrived
        return out

    def _event(self, data: str) -> list[bytes]:
        if self._ended:
            if self._v2 is not None and data != DONE and '"usage"' not in data:
                raise StreamIntegrityError("data after the end of the stream")
            return []
        if data == DONE:
            if self._v2 is not None and not self._v2.finished:
                raise StreamIntegrityError("stream ended without its final frame (truncated)")
            if self._tap is not None and self._receipt_check is not None:
                self.receipt = self._receipt_check(self._tap.receipt, self._tap.answer_sha256)
            self._ended = self.done = True
            return [_DONE_LINE]
        if self._v2 is not None and data.startswith(_FRAME_OPEN) and data.endswith('"}'):
            frame = data[len(_FRAME_OPEN):-2]  # {"e2e":"<b64>"}: what JSON would read
            if '"' not in frame and "\\" not in frame:
                return self._v2.open_lines(frame)
        try:
            event = parse_json(data)
        except ValueError:
            if self._v2 is not None:
                raise StreamIntegrityError("unexpected event in an encrypted stream") from None
            return []
        if not isinstance(event, dict):
            if self._v2 is not None:
                raise StreamIntegrityError("unexpected event in an encrypted stream")
            return []
        if "e2e_error" in event:
            self._ended = True
            self.error = str(event["e2e_error"])[:64]
            return [b"data: " + json.dumps({"error": event["e2e_error"]}).encode()]
        if self._v2 is not None:
            return self._event_v2(event)
        return self._event_v1(event)

    def _event_v1(self, event: dict[str, Any]) -> list[bytes]:
        if self._v1 is None:
            raise TypeError("not a v1 stream")
        if "e2e_init" in event:
            self._v1.open_init(str(event["e2e_init"]))
        elif "e2e" in event:
            return [self._v1.open_line(str(event["e2e"])).encode("utf-8")]
        return []

    def _event_v2(self, event: dict[str, Any]) -> list[bytes]:
        if self._v2 is None:
            raise TypeError("not a v2 stream")
        if "e2e" in event:
            return self._v2.open_lines(str(event["e2e"]))
        if "e2e_final" in event:
            self.final_usage = self._v2.open_final(str(event["e2e_final"])).get("usage")
            return []
        if "e2e_receipt" in event:
            if not self._v2.finished:
                raise StreamIntegrityError("receipt before the final frame")
            return []
        if "usage" in event:
            return []
        raise StreamIntegrityError("unexpected event in an encrypted stream")
