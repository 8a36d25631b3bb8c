"""Offline verification of NVIDIA GPU confidential-computing evidence.

One evidence entry (JSON, the shape NVIDIA's attestation service takes)::

    {"arch": "HOPPER", "certificate": b64(PEM chain, leaf first),
     "evidence": b64(SPDM request+response), "nonce": hex(32 bytes),
     "driver_version": "...", "vbios_version": "...", "version": "1.0"}

Checks per entry, in order (each failure is one :class:`ReasonCode`):

1. shape: fields, base64, canonical PEM, strict SPDM framing   -> gpu_evidence_format
2. chain: every certificate directly issued by the next, within its validity at
   ``now``, issuers are CAs, and the last one *is* the pinned root  -> gpu_cert_chain_invalid
3. nonce: the SPDM request nonce (and the JSON ``nonce``) equal the challenge nonce
                                                                    -> gpu_nonce_mismatch
4. signature: ECDSA P-384/SHA-384 by the leaf key over request+response
                                                                    -> gpu_signature_invalid
5. metadata: signed driver/VBIOS versions equal the JSON ones, the certified chip
   matches ``arch``                                                  -> gpu_metadata_mismatch

Across entries, two entries with the same device key are one GPU -> gpu_duplicate.
The GPUs of one machine share their upper chain (NVIDIA's CAs): a (certificate,
issuer) pair whose signature was already checked is not checked again — within one
:func:`verify_gpu_evidence` call and, through the process-wide
:data:`~chutes_subnet.attestation.verify._linkcache.SHARED_LINKS`, across calls (a validator
re-attests the same GPUs every round) — and the pinned root (compared by hash) is not
asked to verify itself. Validity windows and CA flags are checked on every call.
Revocation (OCSP) and reference measurements (RIM) need NVIDIA's services; see
:mod:`chutes_subnet.attestation.verify.ocsp` (revocation, optional) and the RIM
comparison (not implemented).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from chutes_subnet.errors import AttestationError, GpuEvidenceFormatError

from ._linkcache import SHARED_LINKS, VerifiedLinkCache
from ._pem import split_pem_chain
from .reasons import Reason, ReasonCode
from .spdm import SpdmMeasurements, parse_spdm_measurements

__all__ = [
    "MAX_GPUS",
    "CHIP_MODELS",
    "GpuEvidenceEntry",
    "GpuReport",
    "GpuCheckResult",
    "GpuVerificationError",
    "nvidia_root_der",
    "parse_gpu_entry",
    "verify_gpu_entry",
    "verify_gpu_evidence",
]

MAX_GPUS = 16
#: Certified chip (first word of the leaf certificate's CN) -> (arch, marketing model).
CHIP_MODELS: dict[str, tuple[str, str]] = {
    "GH100": ("HOPPER", "H100"),
    "GB100": ("BLACKWELL", "B200"),
}
_FIELDS = ("arch", "certificate", "evidence", "nonce")


class GpuVerificationError(AttestationError):
    """One GPU entry failed a check; ``code`` names which."""

    def __init__(self, code: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class GpuEvidenceEntry:
    arch: str
    chain_der: tuple[bytes, ...]
    spdm: SpdmMeasurements
    claimed_nonce: bytes
    claimed_driver: str | None
    claimed_vbios: str | None
    #: NVML's CC and DevTools state as the miner reports it (unsigned; None = not stated)
    claimed_cc: bool | None = None
    claimed_devtools: bool | None = None


@dataclass(frozen=True)
class GpuReport:
    """What one verified GPU proved."""

    chip: str
    model: str
    arch: str
    driver_version: str | None
    vbios_version: str | None
    device_id: str
    leaf_der: bytes
    issuer_der: bytes


@dataclass(frozen=True)
class GpuCheckResult:
    reports: tuple[GpuReport, ...]
    reasons: tuple[Reason, ...]

    @property
    def count(self) -> int:
        return len(self.reports)

    @property
    def model(self) -> str | None:
        models = {r.model for r in self.reports}
        return models.pop() if len(models) == 1 else (None if not models else "mixed")


@lru_cache(maxsize=1)
def nvidia_root_der() -> bytes:
    """DER of the pinned NVIDIA Device Identity CA root shipped with the package."""
    pem = resources.files(__package__).joinpath("nvidia_device_identity_root.pem").read_bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > 256 * 1024:
        raise GpuEvidenceFormatError(f"GPU evidence field {what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GpuEvidenceFormatError(f"GPU evidence field {what} is not base64") from exc


def _opt_str(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise GpuEvidenceFormatError(f"GPU evidence field {what} must be a short string")
    return value


def parse_gpu_entry(entry: object) -> GpuEvidenceEntry:
    """Shape-check one JSON entry; raises ``GpuEvidenceFormatError``."""
    if not isinstance(entry, dict) or any(k not in entry for k in _FIELDS):
        raise GpuEvidenceFormatError("GPU evidence entry lacks arch/certificate/evidence/nonce")
    arch = entry["arch"]
    if not isinstance(arch, str) or not arch.isalnum() or len(arch) > 32:
        raise GpuEvidenceFormatError("GPU evidence arch is invalid")
    try:
        chain = split_pem_chain(_b64(entry["certificate"], "certificate"))
    except ValueError as exc:
        raise GpuEvidenceFormatError(f"GPU certificate chain: {exc}") from exc
    nonce_hex = entry["nonce"]
    try:
        if not isinstance(nonce_hex, str) or len(nonce_hex) != 64:
            raise ValueError
        nonce = bytes.fromhex(nonce_hex)
    except ValueError as exc:
        raise GpuEvidenceFormatError("GPU evidence nonce must be 64 hex characters") from exc
    spdm = parse_spdm_measurements(_b64(entry["evidence"], "evidence"))
    return GpuEvidenceEntry(
        arch.upper(), tuple(chain), spdm, nonce,
        _opt_str(entry.get("driver_version"), "driver_version"),
        _opt_str(entry.get("vbios_version"), "vbios_version"),
        _opt_bool(entry.get("cc_enabled"), "cc_enabled"),
        _opt_bool(entry.get("devtools"), "devtools"),
    )


def _opt_bool(value: object, what: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise GpuEvidenceFormatError(f"GPU evidence field {what} must be true or false")
    return value


def _load_chain(chain_der: tuple[bytes, ...]) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(d) for d in chain_der]
    except ValueError as exc:
        raise GpuVerificationError(
            ReasonCode.GPU_CERT_CHAIN_INVALID, "a GPU certificate does not parse"
        ) from exc


#: (certificate DER, issuer DER) pairs whose signature was already verified: a set,
#: or a :class:`~chutes_subnet.attestation.verify._linkcache.VerifiedLinkCache`
VerifiedLinks = set[tuple[bytes, bytes]] | VerifiedLinkCache


def _check_chain(certs: list[x509.Certificate], chain_der: tuple[bytes, ...], root_der: bytes,
                 now: int, verified: VerifiedLinks) -> None:
    bad = ReasonCode.GPU_CERT_CHAIN_INVALID
    if len(certs) < 2 or not hmac.compare_digest(
        hashlib.sha256(certs[-1].public_bytes(serialization.Encoding.DER)).digest(),
        hashlib.sha256(root_der).digest(),
    ):
        raise GpuVerificationError(bad, "GPU certificate chain does not end in the pinned root")
    when = datetime.fromtimestamp(now, tz=UTC)
    for i, cert in enumerate(certs):
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            raise GpuVerificationError(bad, "a GPU certificate is outside its validity window")
        if i < len(certs) - 1:  # the root is pinned by hash above: no self-check needed
            link = (chain_der[i], chain_der[i + 1])
            if link not in verified:
                try:
                    cert.verify_directly_issued_by(certs[i + 1])
                except (ValueError, TypeError, InvalidSignature) as exc:
                    raise GpuVerificationError(
                        bad, "a GPU certificate is not signed by its issuer") from exc
                verified.add(link)
        if i > 0:
            try:
                bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                bc = None
            if bc is None or not bc.ca:
                raise GpuVerificationError(bad, "a GPU certificate issuer is not a CA")


def _chip_of(leaf: x509.Certificate) -> str:
    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    return cn.split(" ", 1)[0].upper() if cn else ""


def verify_gpu_entry(
    entry: GpuEvidenceEntry, nonce: bytes, *, root_der: bytes, now: int,
    verified_links: VerifiedLinks | None = None,
) -> GpuReport:
    """Run checks 2-5 on a parsed entry; raises ``GpuVerificationError``.

    ``verified_links`` carries chain links already verified by this caller (module doc).
    """
    certs = _load_chain(entry.chain_der)
    _check_chain(certs, entry.chain_der, root_der, now,
                 verified_links if verified_links is not None else set())
    if not (
        hmac.compare_digest(entry.spdm.request_nonce, nonce)
        and hmac.compare_digest(entry.claimed_nonce, nonce)
    ):
        raise GpuVerificationError(
            ReasonCode.GPU_NONCE_MISMATCH, "GPU evidence was not made for this challenge nonce"
        )
    leaf_key = certs[0].public_key()
    sig = entry.spdm.signature
    try:
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or leaf_key.curve.name != "secp384r1":
            raise InvalidSignature
        der_sig = encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big"))
        leaf_key.verify(der_sig, entry.spdm.signed, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError) as exc:
        raise GpuVerificationError(
            ReasonCode.GPU_SIGNATURE_INVALID, "GPU measurement signature is invalid"
        ) from exc
    driver, vbios = entry.spdm.driver_version, entry.spdm.vbios_version
    chip = _chip_of(certs[0])
    arch, model = CHIP_MODELS.get(chip, (entry.arch, chip or "unknown"))
    mismatch = (
        (entry.claimed_driver is not None and entry.claimed_driver != driver)
        or (entry.claimed_vbios is not None and entry.claimed_vbios.upper() != (vbios or ""))
        or arch != entry.arch
    )
    if mismatch:
        raise GpuVerificationError(
            ReasonCode.GPU_METADATA_MISMATCH,
            "GPU driver/VBIOS/architecture fields disagree with the signed evidence",
        )
    spki = certs[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return GpuReport(
        chip, model, arch, driver, vbios, hashlib.sha256(spki).hexdigest()[:16],
        entry.chain_der[0], entry.chain_der[1],
    )


def verify_gpu_evidence(
    entries: list[GpuEvidenceEntry], nonce: bytes, *, root_der: bytes, now: int,
    link_cache: VerifiedLinkCache | None = SHARED_LINKS,
) -> GpuCheckResult:
    """Verify every entry; collect one reason per failing GPU and for duplicates.

    ``link_cache`` remembers verified certificate links across calls (module doc);
    ``None`` checks every link of this call afresh.
    """
    reports: list[GpuReport] = []
    reasons: list[Reason] = []
    seen: set[str] = set()
    links: VerifiedLinks = link_cache if link_cache is not None else set()
    for i, entry in enumerate(entries):
        try:
            report = verify_gpu_entry(entry, nonce, root_der=root_der, now=now,
                                      verified_links=links)
        except GpuVerificationError as exc:
            reasons.append(Reason.of(exc.code, f"GPU {i}: {exc}"))
            continue
        if report.device_id in seen:
            reasons.append(Reason.of(ReasonCode.GPU_DUPLICATE, f"GPU {i}: same device as an earlier entry"))
            continue
        seen.add(report.device_id)
        reports.append(report)
    return GpuCheckResult(tuple(reports), tuple(reasons))
