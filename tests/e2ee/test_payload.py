"""Envelope payloads: decompression bombs are refused, malformed payloads are format errors."""

from __future__ import annotations

import gzip

import pytest

from chutes_subnet.e2ee import _payload
from chutes_subnet.errors import EnvelopeFormatError, PayloadTooLargeError
from chutes_subnet.wire.protocol import MAX_DECOMPRESSED_BYTES


def test_decompression_bomb_refused():
    bomb = gzip.compress(b"\x00" * (MAX_DECOMPRESSED_BYTES + 1024))
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLargeError):
        _payload.load(bomb)


@pytest.mark.parametrize("data", [
    b"", b"not gzip", gzip.compress(b"{}")[:-3], gzip.compress(b"{}") + b"x",
    gzip.compress(b"[1]"), gzip.compress(b"\xff\xfe"),
], ids=["empty", "not-gzip", "truncated", "trailing-bytes", "not-an-object", "not-utf8"])
def test_bad_payloads_are_format_errors(data):
    with pytest.raises(EnvelopeFormatError):
        _payload.load(data)
