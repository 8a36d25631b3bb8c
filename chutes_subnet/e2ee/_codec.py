"""gzip with hard size limits (ISA-L when installed, stdlib zlib otherwise).

Output is always a single standard gzip member, so v1 peers using ``gzip`` read it.
Decompression stops at ``max_size + 1`` bytes: a decompression bomb costs at most
that much memory before it is refused.
"""

from __future__ import annotations

import zlib

from chutes_subnet.errors import EnvelopeFormatError, PayloadTooLargeError

try:
    from isal import isal_zlib as _zlib_fast

    GZIP_IMPL = "isal"
except ImportError:  # pragma: no cover - isal is a declared dependency
    _zlib_fast = None
    GZIP_IMPL = "zlib"

_GZIP_WBITS = 31  # 16 + MAX_WBITS: gzip header + trailer


def compress(data: bytes) -> bytes:
    """gzip ``data`` (fastest level: payloads are small or already dense)."""
    if _zlib_fast is not None:
        c = _zlib_fast.compressobj(0, _zlib_fast.DEFLATED, _GZIP_WBITS)
    else:
        c = zlib.compressobj(1, zlib.DEFLATED, _GZIP_WBITS)
    return c.compress(data) + c.flush()


def decompress(data: bytes, max_size: int) -> bytes:
    """gunzip one member of at most ``max_size`` bytes; refuse bombs and trailing data."""
    d = _zlib_fast.decompressobj(_GZIP_WBITS) if _zlib_fast is not None else zlib.decompressobj(_GZIP_WBITS)
    try:
        out = d.decompress(data, max_size + 1)
    except Exception as exc:  # zlib.error / isal_zlib.error
        raise EnvelopeFormatError("payload is not valid gzip") from exc
    if len(out) > max_size or d.unconsumed_tail:
        raise PayloadTooLargeError(f"decompressed payload exceeds {max_size} bytes")
    if not d.eof or d.unused_data:
        raise EnvelopeFormatError("payload is not a single complete gzip member")
    return out
