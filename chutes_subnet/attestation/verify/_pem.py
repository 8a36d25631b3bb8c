"""Strict PEM certificate-chain splitting shared by the TDX and GPU parsers.

Certificate chains travel unsigned next to signed data, so a lenient PEM reader makes
bytes malleable (a newline turned into a vertical tab, non-zero base64 padding bits).
This reader accepts only the canonical encoding — 64-column base64, ``\\n`` line ends —
so that any changed byte is either detected here or by a signature check.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["split_pem_chain", "to_pem"]

_BEGIN = b"-----BEGIN CERTIFICATE-----\n"
_END = b"-----END CERTIFICATE-----\n"
MAX_CERTS = 8


def to_pem(der: bytes) -> bytes:
    """Canonical PEM text of one DER certificate."""
    b64 = base64.b64encode(der)
    lines = [b64[i : i + 64] + b"\n" for i in range(0, len(b64), 64)]
    return _BEGIN + b"".join(lines) + _END


def split_pem_chain(data: bytes, *, allow_nul_padding: bool = False) -> list[bytes]:
    """DER certificates of a canonical PEM chain; ``ValueError`` on any deviation.

    ``allow_nul_padding`` accepts trailing NUL bytes (quote generators terminate the
    PCK chain with one).
    """
    text = data.rstrip(b"\x00") if allow_nul_padding else data
    ders: list[bytes] = []
    pos = 0
    while pos < len(text):
        if len(ders) >= MAX_CERTS:
            raise ValueError("too many certificates in chain")
        if not text.startswith(_BEGIN, pos):
            raise ValueError("certificate chain is not canonical PEM")
        end = text.find(_END, pos)
        if end < 0:
            raise ValueError("unterminated PEM block")
        body = text[pos + len(_BEGIN) : end]
        try:
            der = base64.b64decode(body.replace(b"\n", b""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("invalid base64 in PEM block") from exc
        block = text[pos : end + len(_END)]
        if not der or to_pem(der) != block:
            raise ValueError("certificate chain is not canonical PEM")
        ders.append(der)
        pos = end + len(_END)
    if not ders:
        raise ValueError("empty certificate chain")
    return ders
