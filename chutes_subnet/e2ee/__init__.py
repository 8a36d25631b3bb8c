"""End-to-end encryption recipes: seal/open requests, responses and stream frames.

* :mod:`.v1` — byte-compatible with the public Chutes client (``chutes-e2ee`` 0.1.0).
* :mod:`.v2` — hardened: AAD-bound requests, request-bound responses, counter-nonce
  stream frames with an authenticated final frame, padding negotiated in the AAD.

Everything here is a pure function of its inputs (plus fresh randomness): no I/O,
no clock, no logging. Failures raise :mod:`chutes_subnet.errors` types; a failed
authentication is always the message-less :class:`~chutes_subnet.errors.DecryptionError`.
"""

from chutes_subnet.e2ee import v1, v2
from chutes_subnet.e2ee._codec import GZIP_IMPL
from chutes_subnet.e2ee._json import IMPL as JSON_IMPL
from chutes_subnet.e2ee._json import dumps as dump_json
from chutes_subnet.e2ee._kem import BACKEND as KEM_BACKEND
from chutes_subnet.e2ee._payload import parse as parse_payload
from chutes_subnet.e2ee.keys import KeyPair, decode_public_key
from chutes_subnet.wire.context import PADDING_NONE, PADDING_PADME, RequestContext

__all__ = [
    "GZIP_IMPL",
    "JSON_IMPL",
    "KEM_BACKEND",
    "PADDING_NONE",
    "PADDING_PADME",
    "KeyPair",
    "RequestContext",
    "decode_public_key",
    "dump_json",
    "parse_payload",
    "v1",
    "v2",
]
