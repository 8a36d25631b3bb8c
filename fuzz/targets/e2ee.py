"""Targets: v1/v2 request and response envelopes and the gzip/JSON payload codec.

A random blob almost never authenticates, so each envelope target has three modes
(first input byte): ``0`` the raw blob as received; ``1`` the input as the
*compressed* plaintext, sealed under the real key so the gzip layer sees it; ``2``
the input as the *decompressed* plaintext, so the JSON layer sees it. Modes 1 and 2
are what a malicious but key-holding peer (a client towards the miner, a miner
towards the client) can send.
"""

from __future__ import annotations

import os

from chutes_subnet.e2ee import _kem, _payload, v1, v2
from chutes_subnet.e2ee._codec import compress
from chutes_subnet.e2ee._symmetric import Aead, seal
from chutes_subnet.errors import E2EEError

from .. import seeds
from .._bytes import Cursor
from ._base import Target

__all__ = ["TARGETS"]

_ZERO = bytes(12)


def _plain(cur: Cursor, mode: int) -> bytes:
    body = cur.rest()
    return body if mode == 1 else compress(body)


def _v1_blob(info: bytes, public_key: bytes, compressed: bytes) -> bytes:
    kem_ct, secret = _kem.encapsulate(public_key)
    nonce = os.urandom(12)
    return kem_ct + nonce + seal(v1._derive(secret, kem_ct, info), nonce, compressed, None)


def _v1_request(data: bytes) -> None:
    cur = Cursor(data)
    mode = cur.choice(3)
    if mode == 0:
        blob = cur.rest()
    else:
        blob = _v1_blob(v1.INFO_REQ, seeds.instance_key().public_bytes, _plain(cur, mode))
    v1.open_request(seeds.instance_key(), blob)


def _v1_response(data: bytes) -> None:
    _, rkey, _ = seeds.v1_exchange()
    cur = Cursor(data)
    mode = cur.choice(3)
    blob = cur.rest() if mode == 0 else _v1_blob(v1.INFO_RESP, rkey.public_bytes, _plain(cur, mode))
    v1.open_response(rkey, blob)


def _v1_seeds() -> list[bytes]:
    blob, _, resp = seeds.v1_exchange()
    return [b"\x00" + blob, b"\x00" + resp, b"\x02" + b'{"messages":[],"e2e_response_pk":"AA=="}']


def _v2_request(data: bytes) -> None:
    cur = Cursor(data)
    mode = cur.choice(4)
    ctx = seeds.context()
    if mode == 0:
        blob = cur.rest()
    elif mode == 3:  # fuzzed routing context against a valid envelope
        fields = cur.rest().decode("latin-1").split("\n")[:5] + ["", "", "", "", ""]
        ctx = v2.RequestContext(fields[0], fields[1], fields[2], fields[3], fields[4] == "1")
        blob = seeds.v2_exchange()[0]
    else:
        kem_ct, secret = _kem.encapsulate(seeds.instance_key().public_bytes)
        keys = v2._Keys(secret, kem_ct, ctx.aad(), ctx.padded)
        blob = v2.VERSION_BYTE + kem_ct + Aead(keys.req).seal(_ZERO, _plain(cur, mode), ctx.aad())
    v2.open_request(seeds.instance_key(), ctx, blob)


def _v2_response(data: bytes) -> None:
    _, client, server, _ = seeds.v2_exchange()
    cur = Cursor(data)
    mode = cur.choice(3)
    if mode == 0:
        blob = cur.rest()
    else:
        keys = server._keys
        blob = Aead(keys.resp).seal(_ZERO, _plain(cur, mode), b"response" + keys.binding)
    client.open_response(blob)


def _v2_seeds() -> list[bytes]:
    blob, _, _, resp = seeds.v2_exchange()
    fields = "\n".join([seeds.CHUTE_ID, seeds.INSTANCE_ID, seeds.NONCE, seeds.PATH, "0"])
    return [b"\x00" + blob, b"\x00" + resp, b"\x02" + b'{"messages":[]}',
            b"\x03" + fields.encode()]


def _payload_load(data: bytes) -> None:
    _payload.load(data)


def _payload_seeds() -> list[bytes]:
    return [compress(b'{"messages":[{"role":"user","content":"hi"}]}'), compress(b"[]")]


TARGETS = [
    Target("e2ee_v1_request", "e2ee.v1.open_request (raw, gzip layer, JSON layer)",
           _v1_request, (E2EEError,), _v1_seeds),
    Target("e2ee_v1_response", "e2ee.v1.open_response", _v1_response, (E2EEError,), _v1_seeds),
    Target("e2ee_v2_request", "e2ee.v2.open_request (+ fuzzed RequestContext)", _v2_request,
           (E2EEError,), _v2_seeds),
    Target("e2ee_v2_response", "e2ee.v2.ClientSession.open_response", _v2_response,
           (E2EEError,), _v2_seeds),
    Target("e2ee_payload", "e2ee gzip+JSON payload decoder (bomb/trailing-data limits)",
           _payload_load, (E2EEError,), _payload_seeds),
]
