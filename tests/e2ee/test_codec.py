"""The gzip codec: compatible with the standard library both ways."""

from __future__ import annotations

import gzip

from chutes_subnet.e2ee import _codec


def test_gzip_output_is_stdlib_compatible():
    data = b"hello " * 1000
    assert gzip.decompress(_codec.compress(data)) == data
    assert _codec.decompress(gzip.compress(data), 10**6) == data
