"""The one adapter over the ``dcap-qvl`` package.

``dcap_qvl.verify(quote, collateral, now)`` checks, as a pure function of its inputs:
the PCK certificate chain to Intel's SGX root and the CRLs, the QE report signature
by the PCK key, the QE report binding of the attestation key, the quote signature by
the attestation key, the QE identity and the TCB info (signatures, validity windows,
TCB level matching). It raises ``ValueError`` on any cryptographic or freshness
failure and otherwise returns the TCB *posture* (status and advisories), which our
policy judges. This module maps its errors to :class:`ReasonCode` members and adds
one check dcap-qvl skips: the root certificate embedded in the quote must be Intel's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import dcap_qvl

from chutes_subnet.errors import AttestationError, CollateralError

from .quote import TdxQuote
from .reasons import ReasonCode

__all__ = [
    "INTEL_SGX_ROOT_CA_SHA256",
    "DcapResult",
    "DcapVerificationError",
    "verify_dcap",
    "check_embedded_root",
    "collateral_from_json",
    "quote_fmspc",
]

#: SHA-256 of the DER of "Intel SGX Root CA" (the anchor of every PCK chain).
INTEL_SGX_ROOT_CA_SHA256 = bytes.fromhex(
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)

# (substring of dcap-qvl's message, lower case) -> reason; first match wins.
_ERROR_MAP: tuple[tuple[str, ReasonCode], ...] = (
    ("expired", ReasonCode.COLLATERAL_EXPIRED),
    ("not yet valid", ReasonCode.COLLATERAL_EXPIRED),
    ("revoked", ReasonCode.QUOTE_CERT_REVOKED),
    ("no matching tcb level", ReasonCode.TCB_LEVEL_NOT_FOUND),
    ("tcb info", ReasonCode.DCAP_VERIFICATION_FAILED),
    ("tcbinfo", ReasonCode.DCAP_VERIFICATION_FAILED),
    ("qe identity", ReasonCode.QE_IDENTITY_INVALID),
    ("qe isv", ReasonCode.QE_IDENTITY_INVALID),
    ("qe vendor", ReasonCode.QE_IDENTITY_INVALID),
    ("certificate chain", ReasonCode.QUOTE_CERT_CHAIN_INVALID),
    ("pck cert", ReasonCode.QUOTE_CERT_CHAIN_INVALID),
    ("signature", ReasonCode.QUOTE_SIGNATURE_INVALID),
    ("hash mismatch", ReasonCode.QUOTE_SIGNATURE_INVALID),
    ("decode quote", ReasonCode.QUOTE_FORMAT),
    ("tee type", ReasonCode.QUOTE_FORMAT),
)

_MESSAGES = {
    ReasonCode.COLLATERAL_EXPIRED: "DCAP collateral or a certificate is outside its validity "
    "window at the verification time",
    ReasonCode.QUOTE_CERT_REVOKED: "a certificate of the quote's PCK chain is revoked",
    ReasonCode.TCB_LEVEL_NOT_FOUND: "the platform's TCB is below every level Intel lists for "
    "its FMSPC (microcode/BIOS/TDX module update needed)",
    ReasonCode.QE_IDENTITY_INVALID: "the quoting enclave does not match Intel's QE identity",
    ReasonCode.QUOTE_CERT_CHAIN_INVALID: "the PCK certificate chain does not verify to "
    "Intel's SGX root",
    ReasonCode.QUOTE_SIGNATURE_INVALID: "a quote signature (TD report or QE report) is invalid",
    ReasonCode.QUOTE_FORMAT: "dcap-qvl could not decode the quote",
    ReasonCode.DCAP_VERIFICATION_FAILED: "DCAP verification failed",
}


class DcapVerificationError(AttestationError):
    """DCAP rejected the quote; ``code`` says why, ``detail`` is dcap-qvl's own text."""

    def __init__(self, code: ReasonCode, detail: str = "") -> None:
        super().__init__(_MESSAGES.get(code, "DCAP verification failed"))
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class DcapResult:
    """Verified TCB posture, judged later by the policy."""

    status: str
    advisories: tuple[str, ...]


def _classify(message: str) -> ReasonCode:
    low = message.lower()
    for needle, code in _ERROR_MAP:
        if needle in low:
            return code
    return ReasonCode.DCAP_VERIFICATION_FAILED


def check_embedded_root(quote: TdxQuote) -> None:
    """Require the quote's PCK chain to end in Intel's root (dcap-qvl ignores that cert)."""
    root = quote.qe.pck_chain_der[-1]
    if len(quote.qe.pck_chain_der) < 2 or not hmac.compare_digest(
        hashlib.sha256(root).digest(), INTEL_SGX_ROOT_CA_SHA256
    ):
        raise DcapVerificationError(ReasonCode.QUOTE_CERT_CHAIN_INVALID, "embedded root")


def verify_dcap(raw_quote: bytes, collateral: Any, now: int) -> DcapResult:
    """Run dcap-qvl at time ``now`` (Unix seconds); raise ``DcapVerificationError``."""
    try:
        report = dcap_qvl.verify(bytes(raw_quote), collateral, int(now))
    except (ValueError, RuntimeError, TypeError, OverflowError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        full = " ".join(str(exc).split())
        raise DcapVerificationError(_classify(full), detail) from exc
    return DcapResult(str(report.status), tuple(str(a) for a in report.advisory_ids))


def collateral_from_json(text: str | bytes) -> Any:
    """Load collateral in dcap-qvl's JSON form; ``CollateralError`` if unusable."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        json.loads(text)
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise CollateralError("collateral JSON is malformed") from exc


def quote_fmspc(raw_quote: bytes) -> str:
    """Upper-case hex FMSPC from the quote's PCK certificate (collateral cache key)."""
    try:
        return str(dcap_qvl.parse_quote(bytes(raw_quote)).fmspc()).upper()
    except (ValueError, RuntimeError) as exc:
        raise CollateralError("cannot read FMSPC from the quote") from exc
