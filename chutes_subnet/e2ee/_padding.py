"""Length hiding inside the AEAD: Padmé buckets for envelopes, fixed buckets for frames.

Envelope plaintext (request and non-stream answer)::

    len(body)[4 BE] || body || 0x00 * (padme(4 + len) - 4 - len)

``padme(L)`` (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
Communication with PURBs", PETS 2019) rounds ``L`` up by clearing its low
``E - S`` bits, where ``E = floor(log2 L)`` and ``S = floor(log2 E) + 1``: a length
reveals only O(log log L) bits, and the overhead is below ``2**-S`` (< 1/E) of the
length: below 6.25 % from 256 B and below 3.2 % from 64 KiB (plus the
4-byte length). Bodies up to ``MIN_ENVELOPE - 4`` bytes all pad to
:data:`MIN_ENVELOPE`.

Stream frame plaintext: one or more records ``len(line)[4 BE] || line`` followed by
zeros up to the next multiple of :data:`FRAME_BUCKET`; a zero length ends the
records. A token chunk (~200-300 B of OpenAI JSON) always fills exactly one bucket,
so frame sizes carry no information about token lengths; several lines coalesced in
one frame cost no extra bucket until they exceed it.

Padding bytes are authenticated (they are inside the AEAD); the unpadders check the
length is exactly the canonical one, so there is one valid padding per body.
"""

from __future__ import annotations

import struct

from chutes_subnet.errors import EnvelopeFormatError

__all__ = ["FRAME_BUCKET", "MIN_ENVELOPE", "RECORD_OVERHEAD", "body_bounds", "pack_line", "pack_lines", "pad", "padme",
           "unpack_lines", "unpad"]

MIN_ENVELOPE = 512
FRAME_BUCKET = 512
_LEN = 4
#: bytes a frame record adds to its line (the length prefix)
RECORD_OVERHEAD = _LEN
_MAX_LEN = 0xFFFFFFFF
_u32 = struct.Struct(">I").unpack_from


def padme(length: int) -> int:
    """The Padmé bucket of ``length`` (>= length; equal for lengths < 4)."""
    if length < 4:
        return length
    e = length.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


def padded_size(body_len: int) -> int:
    """Total padded plaintext size for a body of ``body_len`` bytes."""
    return padme(max(MIN_ENVELOPE, _LEN + body_len))


def pad(body: bytes, size: int | None = None) -> bytes:
    """``len || body || zeros`` to the body's bucket (one copy of ``body``); ``size`` is
    ``padded_size(len(body))`` when the caller computed it already."""
    n = len(body)
    if n > _MAX_LEN:
        raise EnvelopeFormatError("payload too large to pad")
    if size is None:
        size = padded_size(n)
    return b"".join((n.to_bytes(_LEN, "big"), body, bytes(size - _LEN - n)))


def body_bounds(plain: bytes) -> tuple[int, int]:
    """``(start, end)`` of the body inside a padded plaintext; refuses non-canonical padding."""
    total = len(plain)
    if total < _LEN:
        raise EnvelopeFormatError("padded payload is too short")
    (n,) = _u32(plain, 0)
    if _LEN + n > total or padded_size(n) != total:
        raise EnvelopeFormatError("payload padding is not canonical")
    return _LEN, _LEN + n


def unpad(plain: bytes) -> memoryview:
    """The body inside a padded plaintext (a view: no copy); refuses non-canonical padding."""
    start, end = body_bounds(plain)
    return memoryview(plain)[start:end]


def pack_lines(lines: list[bytes]) -> bytes:
    """Records for ``lines`` padded to a multiple of :data:`FRAME_BUCKET`."""
    if not lines:
        raise EnvelopeFormatError("a stream frame needs at least one line")
    parts = []
    size = 0
    for line in lines:
        if not line:
            raise EnvelopeFormatError("empty stream line")
        parts.append(len(line).to_bytes(_LEN, "big"))
        parts.append(line)
        size += _LEN + len(line)
    parts.append(bytes(-size % FRAME_BUCKET))
    return b"".join(parts)


_ZEROS = memoryview(bytes(FRAME_BUCKET))


def pack_line(line: bytes) -> bytes:
    """:func:`pack_lines` of one line (the per-token path: one allocation)."""
    n = len(line)
    if not n:
        raise EnvelopeFormatError("empty stream line")
    return b"".join((n.to_bytes(_LEN, "big"), line, _ZEROS[: -(n + _LEN) % FRAME_BUCKET]))


def unpack_lines(plain: bytes) -> list[bytes]:
    """The lines of a padded frame; at least one, and the frame a whole number of buckets."""
    total = len(plain)
    if total == 0 or total % FRAME_BUCKET:
        raise EnvelopeFormatError("stream frame is not a whole number of buckets")
    if total == FRAME_BUCKET:  # the common frame: one record, then zeros (or nothing)
        (n,) = _u32(plain, 0)
        end = _LEN + n
        if 0 < n and end <= total and (end + _LEN > total or not _u32(plain, end)[0]):
            return [plain[_LEN:end]]
    lines: list[bytes] = []
    pos = 0
    while pos + _LEN <= total:
        (n,) = _u32(plain, pos)
        if n == 0:
            break
        end = pos + _LEN + n
        if end > total:
            raise EnvelopeFormatError("stream frame record overruns the frame")
        lines.append(plain[pos + _LEN : end])
        pos = end
    if not lines or total - pos >= FRAME_BUCKET:
        raise EnvelopeFormatError("stream frame padding is not canonical")
    return lines
