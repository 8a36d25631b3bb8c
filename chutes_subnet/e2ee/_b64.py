"""Strict base64 for stream frames: pybase64 (SIMD) when installed, binascii otherwise.

A token frame is base64 text on the wire (SSE carries text), so its encode and decode
run once per frame on each side; binascii's decoder alone cost about as much as the
AEAD call it wraps. ``decode`` accepts the same strings as ``binascii.a2b_base64(...,
strict_mode=True)`` or fewer (pybase64 also refuses padding after a complete quantum,
e.g. ``"QUJD="``) and returns the same bytes; the test suite checks both properties.
Any refusal is a ``ValueError`` (``binascii.Error``).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Any

__all__ = ["IMPL", "decode", "encode"]

encode: Callable[[Any], bytes]
decode: Callable[[Any], bytes]

try:
    import pybase64 as _fast

    def _decode_fast(data: Any, _dec: Any = _fast.b64decode) -> bytes:
        """Strict decode of ``str`` / bytes-like base64 (``validate`` refuses stray bytes)."""
        return _dec(data, validate=True)

    encode = _fast.b64encode
    decode = _decode_fast
    IMPL = "pybase64"
except ImportError:  # pragma: no cover - pybase64 is a declared dependency

    def _encode_std(data: Any) -> bytes:
        return binascii.b2a_base64(data, newline=False)

    def _decode_std(data: Any) -> bytes:
        return binascii.a2b_base64(data, strict_mode=True)

    encode = _encode_std
    decode = _decode_std
    IMPL = "binascii"
