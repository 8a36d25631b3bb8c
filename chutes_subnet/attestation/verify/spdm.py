"""Pure parsing of NVIDIA GPU evidence: SPDM GET_MEASUREMENTS request + response.

Evidence bytes (little-endian)::

    request   version u8 | code 0xE0 | param1 (bit0: signature wanted) | param2
              | nonce 32 | slot_id u8                                     (37 bytes)
    response  version u8 | code 0x60 | param1 | param2 | block_count u8
              | record_len u24 | record | responder_nonce 32
              | opaque_len u16 | opaque (TLVs: type u16 | len u16 | value)
              | signature 96 (ECDSA P-384 r || s)

The signature covers everything before it (request and response). The opaque TLVs
carry NVIDIA metadata; the driver (type 3) and VBIOS (type 6) versions are read from
there because, unlike the JSON fields next to the evidence, they are signed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from chutes_subnet.errors import GpuEvidenceFormatError

__all__ = [
    "SPDM_REQUEST_LEN",
    "SPDM_SIGNATURE_LEN",
    "SpdmMeasurements",
    "parse_spdm_measurements",
    "OPAQUE_DRIVER_VERSION",
    "OPAQUE_VBIOS_VERSION",
    "format_vbios_version",
]

SPDM_REQUEST_LEN = 37
SPDM_SIGNATURE_LEN = 96
REQ_GET_MEASUREMENTS = 0xE0
RSP_MEASUREMENTS = 0x60
OPAQUE_DRIVER_VERSION = 3
OPAQUE_VBIOS_VERSION = 6
MAX_EVIDENCE_BYTES = 64 * 1024


@dataclass(frozen=True)
class SpdmMeasurements:
    version: int
    request_nonce: bytes
    blocks: tuple[tuple[int, bytes], ...]
    responder_nonce: bytes
    opaque: dict[int, bytes]
    signed: bytes
    signature: bytes

    @property
    def driver_version(self) -> str | None:
        raw = self.opaque.get(OPAQUE_DRIVER_VERSION)
        return raw.rstrip(b"\x00").decode("ascii", "replace") if raw else None

    @property
    def vbios_version(self) -> str | None:
        raw = self.opaque.get(OPAQUE_VBIOS_VERSION)
        return format_vbios_version(raw) if raw else None


def format_vbios_version(raw: bytes) -> str:
    """NVIDIA's dotted VBIOS form, e.g. ``00 a5 00 96 01 ..`` -> ``96.00.A5.00.01``."""
    if len(raw) < 5:
        return raw.hex().upper()
    return f"{raw[3]:02X}.{raw[2]:02X}.{raw[1]:02X}.{raw[0]:02X}.{raw[4]:02X}"


def _fail(what: str) -> GpuEvidenceFormatError:
    return GpuEvidenceFormatError(f"SPDM evidence malformed: {what}")


def _parse_opaque(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise _fail("truncated opaque field header")
        kind, size = struct.unpack_from("<HH", data, pos)
        pos += 4
        if pos + size > len(data):
            raise _fail("truncated opaque field")
        if kind in out:
            raise _fail("duplicate opaque field")
        out[kind] = data[pos : pos + size]
        pos += size
    return out


def _parse_blocks(record: bytes, count: int) -> tuple[tuple[int, bytes], ...]:
    blocks: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(record):
        if pos + 4 > len(record):
            raise _fail("truncated measurement block")
        index, _spec, size = struct.unpack_from("<BBH", record, pos)
        pos += 4
        if pos + size > len(record):
            raise _fail("truncated measurement value")
        blocks.append((index, record[pos : pos + size]))
        pos += size
    if len(blocks) != count:
        raise _fail("measurement block count mismatch")
    return tuple(blocks)


def parse_spdm_measurements(evidence: bytes) -> SpdmMeasurements:
    """Parse request+response strictly; raises ``GpuEvidenceFormatError``."""
    if not isinstance(evidence, (bytes, bytearray)):
        raise _fail("not bytes")
    ev = bytes(evidence)
    if len(ev) > MAX_EVIDENCE_BYTES:
        raise _fail("too large")
    min_len = SPDM_REQUEST_LEN + 8 + 32 + 2 + SPDM_SIGNATURE_LEN
    if len(ev) < min_len:
        raise _fail("truncated")
    version, code, param1 = ev[0], ev[1], ev[2]
    if code != REQ_GET_MEASUREMENTS or not 0x10 <= version <= 0x1F:
        raise _fail("not a GET_MEASUREMENTS request")
    if not param1 & 0x01:
        raise _fail("request did not ask for a signature")
    nonce = ev[4:36]
    rsp = ev[SPDM_REQUEST_LEN:]
    if rsp[0] != version or rsp[1] != RSP_MEASUREMENTS:
        raise _fail("not a MEASUREMENTS response")
    count = rsp[4]
    record_len = int.from_bytes(rsp[5:8], "little")
    pos = 8 + record_len
    if pos + 32 + 2 + SPDM_SIGNATURE_LEN > len(rsp):
        raise _fail("measurement record length out of range")
    blocks = _parse_blocks(rsp[8:pos], count)
    responder_nonce = rsp[pos : pos + 32]
    (opaque_len,) = struct.unpack_from("<H", rsp, pos + 32)
    pos += 34
    if pos + opaque_len + SPDM_SIGNATURE_LEN != len(rsp):
        raise _fail("lengths do not account for every byte")
    opaque = _parse_opaque(rsp[pos : pos + opaque_len])
    signature = rsp[-SPDM_SIGNATURE_LEN:]
    return SpdmMeasurements(
        version, nonce, blocks, responder_nonce, opaque, ev[:-SPDM_SIGNATURE_LEN], signature
    )
