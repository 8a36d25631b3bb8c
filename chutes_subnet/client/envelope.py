"""Client side of one invoke: seal the request, open the JSON or SSE answer.

:func:`seal_call` encrypts an OpenAI request body to one instance (v2 when the
instance offers it and the caller allows it, else v1) and builds the invoke headers.
:class:`StreamDecoder` turns the encrypted SSE stream back into the stream the
instance produced, event by event, as bytes arrive:

* v1: ``e2e_init`` sets the stream key, each ``e2e`` event yields one SSE line;
* v2: each ``e2e`` frame must open with the next counter, ``e2e_final`` must carry
  the right chunk count, and the stream must not end (or say ``[DONE]``) without it —
  so a middle box that drops, reorders, duplicates or truncates is detected
  (:class:`~chutes_subnet.errors.StreamIntegrityError`).

Plaintext ``usage`` events (for the gateway's metering) are not handed on: they are
not authenticated, and in v2 the authenticated copy is inside the final frame.
``e2e_error`` becomes ``data: {"error": ...}``, which the OpenAI SDK raises as an
``APIError``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from chutes_subnet.client.discovery import InstanceOffer
from chutes_subnet.e2ee import RequestContext, v1, v2
from chutes_subnet.errors import StreamIntegrityError
from chutes_subnet.protocol import (
    H_AUTHORIZATION,
    H_CHUTE_ID,
    H_INSTANCE_ID,
    H_NONCE,
    H_PATH,
    H_STREAM,
    H_VERSION,
    parse_json,
)
from chutes_subnet.sse import DONE, DONE_EVENT, SSEParser

__all__ = ["SealedCall", "StreamDecoder", "seal_call", "choose_version"]


def choose_version(offer: InstanceOffer, preferred: tuple[int, ...]) -> int | None:
    """First version in ``preferred`` the instance speaks, or None."""
    return next((v for v in preferred if v in offer.e2e_versions), None)


@dataclass
class SealedCall:
    """A sealed request plus what is needed to open its answer."""

    body: bytes
    headers: dict[str, str]
    version: int
    session: Any  # v2.ClientSession | v1.ResponseKey

    def open_json(self, blob: bytes) -> dict[str, Any]:
        """Decrypt a non-stream answer."""
        if self.version == 2:
            return self.session.open_response(blob)
        return v1.open_response(self.session, blob)

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for this call's SSE answer."""
        return StreamDecoder(self.version, self.session)


def seal_call(offer: InstanceOffer, *, chute_id: str, nonce: str, path: str, stream: bool,
              payload: dict[str, Any], api_key: str, version: int) -> SealedCall:
    """Encrypt ``payload`` for ``offer`` and build the ``/e2e/invoke`` headers."""
    pk = base64.b64decode(offer.e2e_pubkey)
    headers = {
        H_AUTHORIZATION: f"Bearer {api_key}", H_CHUTE_ID: chute_id,
        H_INSTANCE_ID: offer.instance_id, H_NONCE: nonce,
        H_STREAM: "true" if stream else "false", H_PATH: path,
        "Content-Type": "application/octet-stream",
    }
    if version == 2:
        ctx = RequestContext(chute_id, offer.instance_id, nonce, path, stream)
        body, session = v2.seal_request(pk, ctx, payload)
        headers[H_VERSION] = "2"
        return SealedCall(body, headers, 2, session)
    body, key = v1.seal_request(pk, payload)
    return SealedCall(body, headers, 1, key)


class StreamDecoder:
    """Incremental decryption of one E2EE SSE answer."""

    def __init__(self, version: int, session: Any) -> None:
        self._version = version
        self._parser = SSEParser()
        self._v1 = v1.StreamOpener(session) if version == 1 else None
        self._v2 = session.stream_opener() if version == 2 else None
        self._ended = False

    def feed(self, chunk: bytes) -> bytes:
        """Decrypt what ``chunk`` completes; returns plaintext SSE bytes (maybe empty)."""
        return b"".join(self._event(d) for d in self._parser.feed(chunk))

    def finish(self) -> bytes:
        """End of input: flush, and for v2 require the final frame."""
        out = b"".join(self._event(d) for d in self._parser.close())
        if self._v2 is not None and not self._ended:
            self._v2.close()  # raises StreamIntegrityError unless the final frame arrived
        return out

    def _event(self, data: str) -> bytes:
        if self._ended:
            if self._v2 is not None and data != DONE and '"usage"' not in data:
                raise StreamIntegrityError("data after the end of the stream")
            return b""
        if data == DONE:
            if self._v2 is not None and not self._v2.finished:
                raise StreamIntegrityError("stream ended without its final frame (truncated)")
            self._ended = True
            return DONE_EVENT
        try:
            event = parse_json(data)
        except ValueError:
            if self._v2 is not None:
                raise StreamIntegrityError("unexpected event in an encrypted stream") from None
            return b""
        if not isinstance(event, dict):
            return b""
        if "e2e_error" in event:
            self._ended = True
            return b"data: " + json.dumps({"error": event["e2e_error"]}).encode() + b"\n\n"
        if self._v2 is not None:
            return self._event_v2(event)
        return self._event_v1(event)

    def _event_v1(self, event: dict[str, Any]) -> bytes:
        assert self._v1 is not None
        if "e2e_init" in event:
            self._v1.open_init(str(event["e2e_init"]))
        elif "e2e" in event:
            return self._v1.open_line(str(event["e2e"])).encode("utf-8") + b"\n\n"
        return b""

    def _event_v2(self, event: dict[str, Any]) -> bytes:
        assert self._v2 is not None
        if "e2e" in event:
            return self._v2.open(str(event["e2e"])) + b"\n\n"
        if "e2e_final" in event:
            self._v2.open_final(str(event["e2e_final"]))
            return b""
        if "usage" in event:
            return b""
        raise StreamIntegrityError("unexpected event in an encrypted stream")
