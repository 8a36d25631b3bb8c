"""The miner's side of one invoke envelope: open the request, seal the answer.

:func:`open_envelope` turns (version, instance key, routing context, body) into an
:class:`OpenedRequest`: the decrypted OpenAI payload, a ``replay_id``, the
``request_binding`` its receipt names it by, and the means to answer it. Answers follow the wire rules of :mod:`chutes_subnet.wire`:

* non-stream: ``seal_json(obj)`` -> body bytes (``application/octet-stream``);
* stream: :class:`StreamFramer` — ``start()`` (v1: ``e2e_init``), ``chunk(line)`` per
  OpenAI chunk line ``"data: {json}"`` (v1 ``{"e2e": ...}``, v2 ``{"e2e": frame}``), or
  ``chunk_lines(lines)`` for UTF-8 lines coalesced into one frame where the format
  allows it (padded v2: ``coalesce_capacity`` is the frame's bucket; else None and one
  frame per line), ``finish(usage)`` (v2: ``{"e2e_final": frame}`` authenticating the chunk count
  and usage; v1: the plaintext usage event the public client passes on); the caller
  then appends the receipt event and ``[DONE]``.

``replay_id`` identifies the request ciphertext (SHA-256 of the KEM ciphertext): the
same ciphertext replayed under another gateway nonce is still recognised, which v1's
missing AAD would otherwise allow.

The plaintext "envelope" exists only for the bench (``dangerous_plaintext_endpoint``).
Pure functions over the e2ee recipes: no I/O, no logging.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Protocol

from chutes_subnet.e2ee import KeyPair, RequestContext, parse_payload, v1, v2
from chutes_subnet.errors import EnvelopeFormatError
from chutes_subnet.receipts import request_binding_for
from chutes_subnet.sse import format_event
from chutes_subnet.wire.headers import ENVELOPE_MEDIA_TYPE
from chutes_subnet.wire.protocol import request_kem_ciphertext

__all__ = ["OpenedRequest", "StreamFramer", "open_envelope", "open_plaintext"]

_E2E_OPEN = b'data: {"e2e":"'
_E2E_CLOSE = b'"}\n\n'


class StreamFramer(Protocol):
    #: bytes of line records one frame holds (:func:`chutes_subnet.e2ee.v2.line_cost`
    #: per line), or None when the format sends one frame per line
    coalesce_capacity: int | None

    def start(self) -> bytes: ...
    def chunk(self, line: str) -> bytes: ...
    def chunk_lines(self, lines: list[bytes]) -> bytes: ...
    def finish(self, usage: dict[str, Any] | None) -> bytes: ...


class _OneFramePerLine:
    """Formats that cannot coalesce send the lines one frame each."""

    __slots__ = ()
    coalesce_capacity: int | None = None

    def chunk(self, line: str) -> bytes:
        raise NotImplementedError

    def chunk_lines(self, lines: list[bytes]) -> bytes:
        return b"".join(self.chunk(line.decode("utf-8")) for line in lines)


class OpenedRequest:
    """A decrypted request and how to answer it."""

    __slots__ = ("payload", "replay_id", "request_binding", "_seal", "_framer", "media_type")

    def __init__(self, payload: dict[str, Any], replay_id: str, request_binding: bytes,
                 seal: Any, framer: Any, media_type: str = ENVELOPE_MEDIA_TYPE) -> None:
        self.payload = payload
        self.replay_id = replay_id
        #: what this request's receipt names it by (:func:`chutes_subnet.receipts.request_binding`)
        self.request_binding = request_binding
        self._seal = seal
        self._framer = framer
        self.media_type = media_type

    def seal_json(self, obj: dict[str, Any]) -> bytes:
        """The non-stream answer body."""
        return self._seal(obj)

    def stream(self) -> StreamFramer:
        """A framer for the streamed answer (call once)."""
        return self._framer()


class _V1Framer(_OneFramePerLine):
    __slots__ = ("_sealer",)

    def __init__(self, response_pk: bytes) -> None:
        self._sealer = v1.StreamSealer(response_pk)

    def start(self) -> bytes:
        return format_event(self._sealer.init_event())

    def chunk(self, line: str) -> bytes:
        return format_event(self._sealer.seal_line(line))

    def finish(self, usage: dict[str, Any] | None) -> bytes:
        # plaintext usage event: the public client hands it to the application
        return format_event({"usage": usage}) if usage is not None else b""


class _V2Framer:
    __slots__ = ("_sealer", "coalesce_capacity")

    def __init__(self, session: v2.ServerSession) -> None:
        self._sealer = session.stream_sealer()
        self.coalesce_capacity = v2.FRAME_CAPACITY if self._sealer.padded else None

    def start(self) -> bytes:
        return b""

    def chunk(self, line: str) -> bytes:
        # == format_event({"e2e": frame}); base64 needs no JSON escaping (hot path: per token)
        return b"".join((_E2E_OPEN, self._sealer.seal_line(line.encode("utf-8")), _E2E_CLOSE))

    def chunk_lines(self, lines: list[bytes]) -> bytes:
        """Several lines in one padded frame (coalesced tokens); one frame each unpadded."""
        seal_line = self._sealer.seal_line
        if len(lines) == 1 or not self._sealer.padded:
            return b"".join(part for line in lines
                            for part in (_E2E_OPEN, seal_line(line), _E2E_CLOSE))
        return b"".join((_E2E_OPEN, self._sealer.seal_lines(lines), _E2E_CLOSE))

    def finish(self, usage: dict[str, Any] | None) -> bytes:
        # the usage is authenticated inside the final frame (and signed in the receipt)
        return format_event({"e2e_final": self._sealer.finish(usage)})


class _PlainFramer(_OneFramePerLine):
    __slots__ = ()

    def start(self) -> bytes:
        return b""

    def chunk(self, line: str) -> bytes:
        return line.encode("utf-8") + b"\n\n"

    def finish(self, usage: dict[str, Any] | None) -> bytes:
        return format_event({"usage": usage}) if usage is not None else b""


def _replay_id(kem_ct: bytes) -> str:
    return "ct:" + hashlib.sha256(kem_ct).hexdigest()[:32]


def open_envelope(version: int, instance_key: KeyPair, ctx: RequestContext, body: bytes) -> OpenedRequest:
    """Decrypt ``body`` sent with E2EE ``version`` (1 or 2) for ``ctx``.

    Raises :class:`~chutes_subnet.errors.E2EEError` subclasses (format, size, or the
    message-less ``DecryptionError``).
    """
    if version == 2:
        payload, session = v2.open_request(instance_key, ctx, body)
        return OpenedRequest(payload, _replay_id(request_kem_ciphertext(version, body)),
                             session.request_binding, session.seal_response,
                             lambda: _V2Framer(session))
    if version == 1:
        payload, response_pk = v1.open_request(instance_key, body)
        return OpenedRequest(payload, _replay_id(request_kem_ciphertext(version, body)),
                             request_binding_for(version, body, ctx),
                             lambda obj: v1.seal_response(response_pk, obj),
                             lambda: _V1Framer(response_pk))
    raise EnvelopeFormatError("unsupported E2EE version")


def open_plaintext(body: bytes) -> OpenedRequest:
    """BENCH ONLY: a JSON body answered in the clear through the same code path."""
    payload = parse_payload(body)
    # no ciphertext to recognise: only the nonce guards against replays here
    return OpenedRequest(payload, "plain:" + os.urandom(16).hex(), hashlib.sha256(body).digest(),
                         lambda obj: json.dumps(obj, separators=(",", ":")).encode(),
                         _PlainFramer, media_type="application/json")
