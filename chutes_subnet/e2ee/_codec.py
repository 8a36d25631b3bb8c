"""The gzip container: written with stored (uncompressed) blocks, read with hard limits.

Compression policy (docs/protocol.md, "Compression"): this project never compresses
what it seals. A chat payload mixes attacker-influenced text (retrieved documents, a
prompt echoed by the model) with secrets (system prompts, earlier turns); compressing
them together and exposing the ciphertext length is a compression oracle (CRIME,
BREACH), and padding only blurs it. Where it is not an oracle it does not pay either:
gzip costs about 2.3 ms per MiB here, more than sending the bytes it saves over any
link faster than about 100 MB/s. So:

* v2 with padding (the default) has no gzip at all: the plaintext is padded JSON.
* v1 and unpadded v2 need a gzip member by their format; :func:`compress` writes one
  made of stored blocks (RFC 1951 BTYPE=00), so every v1 reader, the public client
  included, still reads it. Cost: a CRC-32 and one copy (about 70 us per MiB).
* :func:`decompress` reads any gzip member (the public client does compress), refusing
  bombs: it stops at ``max_size + 1`` bytes.
"""

from __future__ import annotations

import zlib
from types import ModuleType

from chutes_subnet.errors import EnvelopeFormatError, PayloadTooLargeError

_zlib_fast: ModuleType | None
try:
    from isal import isal_zlib as _zlib_fast

    GZIP_IMPL = "isal"
except ImportError:  # pragma: no cover - isal is a declared dependency
    _zlib_fast = None
    GZIP_IMPL = "zlib"

_GZIP_WBITS = 31  # 16 + MAX_WBITS: gzip header + trailer
_crc32 = _zlib_fast.crc32 if _zlib_fast is not None else zlib.crc32
#: magic, CM=deflate, no flags, mtime 0, no extra flags, OS unknown
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_STORED_MAX = 0xFFFF


def compress(data: bytes) -> bytes:
    """One gzip member of stored blocks holding ``data`` (no compression: see above)."""
    n = len(data)
    view = memoryview(data)
    parts: list[bytes | memoryview] = [_GZIP_HEADER]
    start = 0
    while True:
        block = view[start : start + _STORED_MAX]
        start += len(block)
        final = start >= n
        size = len(block)
        parts.append(bytes((1 if final else 0, size & 0xFF, size >> 8,
                            ~size & 0xFF, (~size >> 8) & 0xFF)))
        parts.append(block)
        if final:
            break
    parts.append((_crc32(data) & 0xFFFFFFFF).to_bytes(4, "little") + (n & 0xFFFFFFFF).to_bytes(4, "little"))
    return b"".join(parts)


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
