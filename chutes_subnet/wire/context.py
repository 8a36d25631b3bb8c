"""The request context a v2 envelope is bound to, and its canonical AAD encoding.

Part of the wire contract: both ends of an envelope and the gateway (which computes a
receipt's request binding from it, and holds no key material) build it from the routing
headers. Pure: no crypto.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from chutes_subnet.errors import EnvelopeFormatError

__all__ = ["AAD_LABEL", "PADDING_NONE", "PADDING_PADME", "PADDING_SCHEMES", "RequestContext"]

AAD_LABEL = b"chutes-e2ee/v2"
_MAX_FIELD = 0xFFFF

#: No padding: the plaintext is a gzip member (v2 as first specified).
PADDING_NONE = 0
#: Padmé-padded envelopes and 512-byte stream buckets (:mod:`chutes_subnet.e2ee._padding`).
PADDING_PADME = 1
PADDING_SCHEMES = (PADDING_NONE, PADDING_PADME)
_AAD_PREFIX = AAD_LABEL + b"\x00\x02"
_u16 = struct.Struct(">H").pack
#: the AAD's last byte(s) by (stream, padding): the padding byte only when padded
_STREAM_PAD = {(stream, pad): bytes((stream,)) + (bytes((pad,)) if pad != PADDING_NONE else b"")
               for stream in (False, True) for pad in PADDING_SCHEMES}


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Routing facts both ends must agree on: chute, instance, gateway nonce, path, stream
    flag, and the negotiated padding scheme.

    ``padding`` defaults to what an absent ``X-E2E-Padding`` header means (none); the
    client and the validator's benchmark ask for :data:`PADDING_PADME` by default.
    """

    chute_id: str
    instance_id: str
    nonce: str
    path: str
    stream: bool
    padding: int = PADDING_NONE

    def __post_init__(self) -> None:
        if self.padding not in PADDING_SCHEMES:
            raise EnvelopeFormatError("unknown padding scheme")

    @property
    def padded(self) -> bool:
        return self.padding != PADDING_NONE

    def with_padding(self, padding: int) -> RequestContext:
        """The same context with another padding scheme."""
        return replace(self, padding=padding)

    def aad(self) -> bytes:
        """Canonical AAD::

            "chutes-e2ee/v2" || 0x00 || version (1 byte = 2)
            || for chute_id, instance_id, nonce, path: len (2 bytes BE) || UTF-8 bytes
            || stream (1 byte: 0 or 1)
            || padding (1 byte), present only when not PADDING_NONE

        Length prefixes make the encoding injective (no two contexts share an AAD); the
        padding byte is what binds the negotiation, so a router that strips the padding
        header makes the request fail to open. Unpadded contexts keep the original AAD.
        """
        c, i, n, p = (self.chute_id.encode("utf-8"), self.instance_id.encode("utf-8"),
                      self.nonce.encode("utf-8"), self.path.encode("utf-8"))
        if max(len(c), len(i), len(n), len(p)) > _MAX_FIELD:
            raise EnvelopeFormatError("request context field too long")
        return b"".join((_AAD_PREFIX, _u16(len(c)), c, _u16(len(i)), i, _u16(len(n)), n,
                         _u16(len(p)), p, _STREAM_PAD[bool(self.stream), self.padding]))
