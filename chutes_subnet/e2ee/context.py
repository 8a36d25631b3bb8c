"""The request context a v2 envelope is bound to, and its canonical AAD encoding."""

from __future__ import annotations

from dataclasses import dataclass

from chutes_subnet.errors import EnvelopeFormatError

__all__ = ["RequestContext", "AAD_LABEL"]

AAD_LABEL = b"chutes-e2ee/v2"
_MAX_FIELD = 0xFFFF


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Routing facts both ends must agree on: chute, instance, gateway nonce, path, stream flag."""

    chute_id: str
    instance_id: str
    nonce: str
    path: str
    stream: bool

    def aad(self) -> bytes:
        """Canonical AAD::

            "chutes-e2ee/v2" || 0x00 || version (1 byte = 2)
            || for chute_id, instance_id, nonce, path: len (2 bytes BE) || UTF-8 bytes
            || stream (1 byte: 0 or 1)

        Length prefixes make the encoding injective (no two contexts share an AAD).
        """
        out = bytearray(AAD_LABEL)
        out += b"\x00\x02"
        for field in (self.chute_id, self.instance_id, self.nonce, self.path):
            raw = field.encode("utf-8")
            if len(raw) > _MAX_FIELD:
                raise EnvelopeFormatError("request context field too long")
            out += len(raw).to_bytes(2, "big") + raw
        out += b"\x01" if self.stream else b"\x00"
        return bytes(out)
