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
    "parse_plaintext",
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
    size = _padding.padded_size(len(raw))
    if size > MAX_ENVELOPE_BYTES:
        raise PayloadTooLargeError(f"padded payload exceeds {MAX_ENVELOPE_BYTES} bytes")
    return _padding.pad(raw, size)


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
#: parsing (brackets inside strings count too, so the bound is conservative, for bodies
#: over twice the limit): 16 MiB of ``{}`` would otherwise become eight million dicts
#: (~1 GiB) from a 17 KiB gzip body.
MAX_JSON_CONTAINERS = 200_000


#: ``{``/``[`` bytes found one by one (memchr) before counting the rest in bulk
_SCAN_BUDGET = 256


def _opens_too_many_containers(data: bytes | memoryview, start: int = 0,
                               end: int | None = None) -> bool:
    """More than :data:`MAX_JSON_CONTAINERS` ``{``/``[`` bytes in ``data[start:end]``?

    A container takes at least two bytes, so bodies up to twice the limit cannot exceed
    it and are not scanned. Larger ones are searched with ``bytes.find`` (memchr, about
    10 us per MiB when there are few brackets, as in prose) for up to
    :data:`_SCAN_BUDGET` hits, then counted in one vectorised pass (numpy, about 90 us
    per MiB; ``bytes.count`` would take about 250 us per byte value).
    """
    end = len(data) if end is None else end
    if end - start <= 2 * MAX_JSON_CONTAINERS:
        return False
    if isinstance(data, bytes):
        hits = 0
        for opener in (b"{", b"["):
            pos = data.find(opener, start, end)
            while pos >= 0:
                hits += 1
                if hits > _SCAN_BUDGET:
                    return _count_openers(memoryview(data)[start:end]) > MAX_JSON_CONTAINERS
                pos = data.find(opener, pos + 1, end)
        return False  # at most _SCAN_BUDGET (< MAX_JSON_CONTAINERS)
    return _count_openers(data[start:end]) > MAX_JSON_CONTAINERS


def _count_openers(view: bytes | memoryview) -> int:
    """Number of ``{`` and ``[`` bytes, in one vectorised pass."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a declared dependency
        raw = bytes(view)
        return raw.count(b"{") + raw.count(b"[")
    folded = np.frombuffer(view, np.uint8) | np.uint8(0x20)  # "[" (0x5B) -> "{" (0x7B)
    hits = folded.view(np.bool_)
    np.equal(folded, np.uint8(0x7B), out=hits)
    return int(np.count_nonzero(hits))


def _too_many() -> PayloadTooLargeError:
    return PayloadTooLargeError(f"payload opens more than {MAX_JSON_CONTAINERS} JSON "
                                "objects/arrays")


def _load_object(raw: bytes | memoryview) -> dict[str, Any]:
    try:
        obj = _json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeFormatError("payload is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise EnvelopeFormatError("payload must be a JSON object")
    return obj


def parse(raw: bytes | memoryview) -> dict[str, Any]:
    """Parse a JSON object payload (bounded depth and container count, strict)."""
    if len(raw) > 2 * MAX_JSON_CONTAINERS and _opens_too_many_containers(raw):
        raise _too_many()
    return _load_object(raw)


def parse_plaintext(plain: bytes, padded: bool) -> dict[str, Any]:
    """:func:`parse` of the payload inside an opened plaintext (:func:`decode`), reading
    a padded body in place (no copy, and the bracket search runs on the bytes object)."""
    if not padded:
        return parse(inflate(plain))
    start, end = _padding.body_bounds(plain)
    if end - start > 2 * MAX_JSON_CONTAINERS and _opens_too_many_containers(plain, start, end):
        raise _too_many()
    return _load_object(memoryview(plain)[start:end])


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
