"""JSON payload <-> sealed plaintext bytes, with the protocol's size limits.

Two plaintext encodings (see :mod:`chutes_subnet.e2ee._codec` for why neither compresses):

* padded (v2 default): ``_padding.pad(JSON)``;
* gzip (v1, unpadded v2): one gzip member of stored blocks around the JSON.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from chutes_subnet.e2ee import _codec, _json, _padding
from chutes_subnet.errors import EnvelopeFormatError, PayloadTooLargeError
from chutes_subnet.wire.protocol import MAX_DECOMPRESSED_BYTES, MAX_ENVELOPE_BYTES

__all__ = [
    "MAX_JSON_CONTAINERS",
    "b64decode",
    "b64encode",
    "check_envelope_size",
    "decode",
    "dump",
    "encode",
    "inflate",
    "load",
    "parse",
]


def _serialise(payload: dict[str, Any] | bytes) -> bytes:
    if isinstance(payload, bytes):
        raw = payload
    else:
        try:
            raw = _json.dumps(payload)
        except ValueError as exc:
            raise EnvelopeFormatError(str(exc)) from None
    if len(raw) > MAX_DECOMPRESSED_BYTES:
        raise PayloadTooLargeError(f"payload exceeds {MAX_DECOMPRESSED_BYTES} bytes")
    return raw


def dump(payload: dict[str, Any] | bytes) -> bytes:
    """Serialise (unless already bytes) into a gzip member, enforcing the size limit."""
    return _codec.compress(_serialise(payload))


def encode(payload: dict[str, Any] | bytes, padded: bool) -> bytes:
    """The plaintext to seal: padded JSON, or the gzip member when ``padded`` is false."""
    if not padded:
        return dump(payload)
    raw = _serialise(payload)
    if _padding.padded_size(len(raw)) > MAX_ENVELOPE_BYTES:
        raise PayloadTooLargeError(f"padded payload exceeds {MAX_ENVELOPE_BYTES} bytes")
    return _padding.pad(raw)


def decode(plain: bytes, padded: bool) -> bytes | memoryview:
    """The JSON bytes inside an opened plaintext (a view for padded plaintext)."""
    return _padding.unpad(plain) if padded else inflate(plain)


def load(compressed: bytes) -> dict[str, Any]:
    """gunzip and parse a JSON object payload."""
    return parse(inflate(compressed))


def inflate(compressed: bytes) -> bytes:
    """gunzip with the protocol's decompressed-size limit."""
    return _codec.decompress(compressed, MAX_DECOMPRESSED_BYTES)


#: Most JSON objects + arrays a payload may open. Counted as ``{`` and ``[`` bytes before
#: parsing (brackets inside strings count too, so the bound is conservative): 16 MiB of
#: ``{}`` would otherwise become eight million dicts (~1 GiB) from a 17 KiB gzip body.
MAX_JSON_CONTAINERS = 200_000


def parse(raw: bytes | memoryview) -> dict[str, Any]:
    """Parse a JSON object payload (bounded depth and container count, strict)."""
    data = raw if isinstance(raw, bytes) else bytes(raw)
    if data.count(b"{") + data.count(b"[") > MAX_JSON_CONTAINERS:
        raise PayloadTooLargeError(f"payload opens more than {MAX_JSON_CONTAINERS} JSON "
                                   "objects/arrays")
    raw = data
    try:
        obj = _json.loads(raw)
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
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeFormatError(f"{what} is not valid base64") from exc


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
