"""JSON payload <-> compressed bytes, with the protocol's size limits."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from chutes_subnet.e2ee import _codec
from chutes_subnet.errors import EnvelopeFormatError, PayloadTooLargeError
from chutes_subnet.wire.protocol import MAX_DECOMPRESSED_BYTES, MAX_ENVELOPE_BYTES, parse_json


def dump(payload: dict[str, Any] | bytes) -> bytes:
    """Serialise (unless already bytes) and gzip a payload, enforcing the size limit."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    if len(raw) > MAX_DECOMPRESSED_BYTES:
        raise PayloadTooLargeError(f"payload exceeds {MAX_DECOMPRESSED_BYTES} bytes")
    return _codec.compress(raw)


def load(compressed: bytes) -> dict[str, Any]:
    """gunzip and parse a JSON object payload."""
    return parse(inflate(compressed))


def inflate(compressed: bytes) -> bytes:
    """gunzip with the protocol's decompressed-size limit."""
    return _codec.decompress(compressed, MAX_DECOMPRESSED_BYTES)


def parse(raw: bytes) -> dict[str, Any]:
    """Parse a JSON object payload."""
    try:
        obj = parse_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeFormatError("payload is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise EnvelopeFormatError("payload must be a JSON object")
    return obj


def check_envelope_size(blob: bytes) -> None:
    """Refuse envelopes over the wire limit before any crypto runs."""
    if len(blob) > MAX_ENVELOPE_BYTES:
        raise PayloadTooLargeError(f"envelope exceeds {MAX_ENVELOPE_BYTES} bytes")


def b64decode(text: str, what: str) -> bytes:
    """Strict base64 decode with a format error naming ``what`` (never the data)."""
    if not isinstance(text, str):
        raise EnvelopeFormatError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeFormatError(f"{what} is not valid base64") from exc


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
