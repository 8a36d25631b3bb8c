"""Issue 17 hygiene: a 17 KiB gzip body inflating to 16 MiB of ``{}`` must be refused
before it becomes millions of Python objects (it grew the miner from 295 to 1,490 MiB
RSS and stalled /health for 1.9 s). The miner also opens bodies over 64 KiB in a worker
thread (``miner/invoke.py``), so decryption and parsing do not hold the event loop."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from chutes_subnet.e2ee import _payload
from chutes_subnet.errors import PayloadTooLargeError
from chutes_subnet.wire.protocol import MAX_DECOMPRESSED_BYTES

N = (MAX_DECOMPRESSED_BYTES - 64) // 3


def test_object_bomb_is_refused_before_parsing():
    bomb = gzip.compress(b'{"m":[' + b"{}," * N + b"{}]}", 9)
    assert len(bomb) < 64 * 1024                       # tiny on the wire
    started = time.perf_counter()
    with pytest.raises(PayloadTooLargeError, match="JSON objects/arrays"):
        _payload.load(bomb)
    assert time.perf_counter() - started < 5           # counted, not parsed (generous)


def test_realistic_payloads_with_brackets_still_parse():
    code = "def f(x):\n    return {'a': [x, {'b': [1, 2]}]}\n" * 2000   # 8,000 brackets
    payload = {"model": "m", "messages": [{"role": "user", "content": code}] * 5}
    assert _payload.parse(json.dumps(payload).encode()) == payload
    limit = _payload.MAX_JSON_CONTAINERS
    at_limit = b'{"a":[' + b"[]," * (limit - 3) + b"[]]}"
    assert len(_payload.parse(at_limit)["a"]) == limit - 2
    with pytest.raises(PayloadTooLargeError):
        _payload.parse(b'{"a":[' + b"[]," * (limit - 1) + b"[]]}")

