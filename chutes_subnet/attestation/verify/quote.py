"""Pure, strict parsing of Intel TDX quotes (v4 and v5; TD report 1.0 and 1.5).

Layout (all integers little-endian)::

    header (48)   version u16 | att_key_type u16 | tee_type u32 | reserved 4
                  | qe_vendor_id 16 | user_data 20
    v5 only       body_type u16 (2 = TD report 1.0, 3 = TD report 1.5) | body_size u32
    body          TD report 1.0 (584) or 1.5 (648, adds tee_tcb_svn2 16 | mr_servicetd 48)
    sig_len u32
    sig data      ecdsa_sig 64 | att_pubkey 64 | cert_type u16 (= 6) | cert_size u32
                  | qe_report 384 | qe_report_sig 64 | auth_len u16 | auth_data
                  | pck_type u16 (= 5) | pck_size u32 | PEM chain (NUL-terminated)
    padding       zero bytes only

TD report 1.0: tee_tcb_svn 16 | mr_seam 48 | mr_signer_seam 48 | seam_attributes 8 |
td_attributes 8 | xfam 8 | mr_td 48 | mr_config_id 48 | mr_owner 48 | mr_owner_config 48
| rtmr0..3 4x48 | report_data 64.

The parser is stricter than DCAP itself: declared sizes must account for every byte,
certification data types are fixed, the PEM chain must be canonical and padding must
be zero. Bytes the signatures do not cover therefore cannot change unnoticed. Every
failure raises :class:`~chutes_subnet.errors.QuoteFormatError`; nothing else escapes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from chutes_subnet.errors import QuoteFormatError

from ._pem import split_pem_chain

__all__ = [
    "TEE_TYPE_TDX",
    "TEE_TYPE_SGX",
    "MAX_QUOTE_BYTES",
    "QuoteHeader",
    "TdReport",
    "QeCertData",
    "TdxQuote",
    "Measurements",
    "parse_header",
    "parse_quote",
]

TEE_TYPE_TDX = 0x81
TEE_TYPE_SGX = 0x00
ATT_KEY_ECDSA_P256 = 2
CERT_TYPE_QE_REPORT = 6
CERT_TYPE_PCK_CHAIN = 5
HEADER_LEN = 48
TD_REPORT10_LEN = 584
TD_REPORT15_LEN = 648
QE_REPORT_LEN = 384
MAX_QUOTE_BYTES = 32 * 1024
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28

_BODY_SIZES = {2: TD_REPORT10_LEN, 3: TD_REPORT15_LEN}


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class Measurements:
    """The TD measurements a policy profile pins (48 bytes each)."""

    mrtd: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes

    def to_hex(self) -> dict[str, str]:
        """Lower-case hex of each register, keyed like the policy file."""
        return {k: getattr(self, k).hex() for k in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")}


@dataclass(frozen=True)
class TdReport:
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None

    @property
    def attributes(self) -> int:
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        """True when the TD runs in DEBUG mode (host can read its memory)."""
        return bool(self.attributes & TD_ATTR_DEBUG)

    @property
    def measurements(self) -> Measurements:
        return Measurements(self.mr_td, *self.rtmr)


@dataclass(frozen=True)
class QeCertData:
    qe_report: bytes
    qe_report_signature: bytes
    auth_data: bytes
    pck_chain_der: tuple[bytes, ...]


@dataclass(frozen=True)
class TdxQuote:
    header: QuoteHeader
    body_type: int
    report: TdReport
    signed_bytes: bytes
    signature: bytes
    attestation_key: bytes
    qe: QeCertData
    raw: bytes


class _Reader:
    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data, self.pos = data, start
        self.end = len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise QuoteFormatError(f"quote truncated in {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])


def parse_header(raw: bytes) -> QuoteHeader:
    """Parse only the 48-byte header (enough to tell TDX from SGX)."""
    if not isinstance(raw, (bytes, bytearray)):
        raise QuoteFormatError("quote must be bytes")
    r = _Reader(bytes(raw))
    version, akt, tee = r.u16("header"), r.u16("header"), r.u32("header")
    r.take(4, "header")
    return QuoteHeader(version, akt, tee, r.take(16, "header"), r.take(20, "header"))


def _parse_td_report(body: bytes) -> TdReport:
    r = _Reader(body)
    names = ("tee_tcb_svn", "mr_seam", "mr_signer_seam", "seam_attributes", "td_attributes",
             "xfam", "mr_td", "mr_config_id", "mr_owner", "mr_owner_config")
    sizes = (16, 48, 48, 8, 8, 8, 48, 48, 48, 48)
    named = {name: r.take(n, "TD report") for name, n in zip(names, sizes, strict=True)}
    rtmr = (r.take(48, "RTMR"), r.take(48, "RTMR"), r.take(48, "RTMR"), r.take(48, "RTMR"))
    report_data = r.take(64, "report_data")
    svn2 = mrs = None
    if len(body) == TD_REPORT15_LEN:
        svn2, mrs = r.take(16, "TD report 1.5"), r.take(48, "TD report 1.5")
    return TdReport(**named, rtmr=rtmr, report_data=report_data, tee_tcb_svn2=svn2,
                    mr_service_td=mrs)


def _parse_qe_cert_data(r: _Reader) -> QeCertData:
    qe_report = r.take(QE_REPORT_LEN, "QE report")
    qe_sig = r.take(64, "QE report signature")
    auth = r.take(r.u16("QE auth data"), "QE auth data")
    if r.u16("PCK certification type") != CERT_TYPE_PCK_CHAIN:
        raise QuoteFormatError("unsupported PCK certification data type")
    size = r.u32("PCK certification size")
    pem = r.take(size, "PCK certificate chain")
    if r.pos != r.end:
        raise QuoteFormatError("unaccounted bytes in QE certification data")
    try:
        chain = split_pem_chain(pem, allow_nul_padding=True)
    except ValueError as exc:
        raise QuoteFormatError(f"PCK certificate chain: {exc}") from exc
    return QeCertData(qe_report, qe_sig, auth, tuple(chain))


def parse_quote(raw: bytes) -> TdxQuote:
    """Parse a TDX quote strictly; raises ``QuoteFormatError`` on any malformation."""
    header = parse_header(raw)
    raw = bytes(raw)
    if len(raw) > MAX_QUOTE_BYTES:
        raise QuoteFormatError("quote too large")
    if header.tee_type != TEE_TYPE_TDX:
        raise QuoteFormatError(f"not a TDX quote (TEE type {header.tee_type:#x})")
    if header.att_key_type != ATT_KEY_ECDSA_P256:
        raise QuoteFormatError("unsupported attestation key type")
    r = _Reader(raw, HEADER_LEN)
    if header.version == 4:
        body_type, size = 2, TD_REPORT10_LEN
    elif header.version == 5:
        body_type, size = r.u16("body descriptor"), r.u32("body descriptor")
        if _BODY_SIZES.get(body_type) != size:
            raise QuoteFormatError("unsupported TD report type or size")
    else:
        raise QuoteFormatError(f"unsupported quote version {header.version}")
    report = _parse_td_report(r.take(size, "TD report"))
    signed_end = r.pos
    sig_len = r.u32("signature data length")
    sig_end = r.pos + sig_len
    if sig_end > len(raw):
        raise QuoteFormatError("quote truncated in signature data")
    s = _Reader(raw, r.pos, sig_end)
    signature = s.take(64, "quote signature")
    att_key = s.take(64, "attestation key")
    if s.u16("certification type") != CERT_TYPE_QE_REPORT:
        raise QuoteFormatError("unsupported certification data type")
    cert_size = s.u32("certification size")
    if s.pos + cert_size != sig_end:
        raise QuoteFormatError("certification size does not match signature data length")
    qe = _parse_qe_cert_data(_Reader(raw, s.pos, sig_end))
    if raw[sig_end:].strip(b"\x00"):
        raise QuoteFormatError("non-zero bytes after signature data")
    return TdxQuote(header, body_type, report, raw[:signed_end], signature, att_key, qe, raw)
