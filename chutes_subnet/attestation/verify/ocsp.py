"""GPU certificate revocation over OCSP (RFC 6960): requests, responses, outcomes.

Pure: this module builds requests and judges responses; asking a responder is the
job of an injected :class:`RevocationChecker` (the validator's is
:class:`chutes_subnet.attestation.fetch.ocsp_client.GpuOnlineChecker`).

A response counts only if it is SUCCESSFUL, names exactly this (issuer name/key
hash, serial), is current (``thisUpdate`` <= now < ``nextUpdate``, small clock
skew), echoes our nonce when it carries one, and is signed by the issuer or by a
responder certificate with the OCSPSigning EKU, valid now, and signed by the issuer
or a CA above it in the (already verified, pinned-root) chain.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from .binding import constant_time_equal

__all__ = [
    "NVIDIA_OCSP_URL",
    "REVOCATION_SKIPPED_NOTE",
    "REVOCATION_UNUSABLE_NOTE",
    "ChainRevocation",
    "OcspResponseError",
    "RevocationChecker",
    "RevocationStatus",
    "build_ocsp_request",
    "key_sha1",
    "ocsp_url_of",
    "verify_ocsp_response",
]

NVIDIA_OCSP_URL = "https://ocsp.ndis.nvidia.com/"
REVOCATION_SKIPPED_NOTE = "gpu revocation check skipped (offline)"
REVOCATION_UNUSABLE_NOTE = "gpu revocation check skipped (unusable OCSP response)"
MAX_OCSP_RESPONSE = 64 * 1024
CLOCK_SKEW = timedelta(minutes=5)


class OcspResponseError(ValueError):
    """An OCSP response is malformed, unsigned by the issuer, stale or for another cert."""


class RevocationStatus(str, enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"
    SKIPPED_OFFLINE = "skipped_offline"
    SKIPPED_UNUSABLE = "skipped_unusable"


@dataclass(frozen=True)
class ChainRevocation:
    """Outcome for one chain: the worst status and, if bad, which certificate."""

    status: RevocationStatus
    index: int | None = None

    @property
    def rejected(self) -> bool:
        return self.status in (RevocationStatus.REVOKED, RevocationStatus.UNKNOWN)


class RevocationChecker(Protocol):
    """What the verifier asks about a verified GPU chain (injected; may do I/O)."""

    def check_chain(self, chain_der: Sequence[bytes], now: int) -> ChainRevocation:
        """Revocation status of ``chain_der`` (DER, leaf first) at ``now``; never raises
        for network trouble (the outcome is then a ``SKIPPED_*`` status)."""
        ...


def ocsp_url_of(cert: x509.Certificate) -> str | None:
    """The first ``http(s)`` OCSP URL in the certificate's AIA extension, if any."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        loc = desc.access_location
        if (desc.access_method == AuthorityInformationAccessOID.OCSP
                and isinstance(loc, x509.UniformResourceIdentifier)
                and loc.value.startswith(("http://", "https://"))):
            return loc.value
    return None


def build_ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, nonce: bytes) -> bytes:
    """DER OCSP request for ``cert`` (SHA-384 CertID, as NVIDIA's service uses) with a nonce."""
    return (ocsp.OCSPRequestBuilder()
            .add_certificate(cert, issuer, hashes.SHA384())
            .add_extension(x509.OCSPNonce(nonce), critical=False)
            .build().public_bytes(serialization.Encoding.DER))


def key_sha1(cert: x509.Certificate) -> bytes:
    """SHA-1 of the certificate's public key BIT STRING (OCSP KeyHash, RFC 6960 4.2.1)."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _cert_id(cert: x509.Certificate, issuer: x509.Certificate,
             algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    return req.issuer_name_hash, req.issuer_key_hash


def _verify_sig(public_key: object, resp: ocsp.OCSPResponse) -> None:
    algo = resp.signature_hash_algorithm
    if algo is None:
        raise OcspResponseError("OCSP response signature algorithm is unsupported")
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(algo))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), algo)
        else:
            raise OcspResponseError("OCSP responder key type is unsupported")
    except InvalidSignature as exc:
        raise OcspResponseError("OCSP response signature is invalid") from exc


def _names_responder(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if resp.responder_key_hash is not None:
        return constant_time_equal(resp.responder_key_hash, key_sha1(cert))
    return resp.responder_name == cert.subject


def _signer(resp: ocsp.OCSPResponse, authorities: Sequence[x509.Certificate],
            when: datetime) -> x509.Certificate:
    issuer = authorities[0]
    if _names_responder(resp, issuer):
        return issuer
    for cand in resp.certificates:
        if not _names_responder(resp, cand):
            continue
        for ca in authorities:
            try:
                cand.verify_directly_issued_by(ca)
                break
            except (ValueError, TypeError, InvalidSignature):
                continue
        else:
            raise OcspResponseError("OCSP delegated responder is not certified by the issuer's chain")
        try:
            eku = cand.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound as exc:
            raise OcspResponseError("OCSP delegated responder lacks the OCSPSigning usage") from exc
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise OcspResponseError("OCSP delegated responder lacks the OCSPSigning usage")
        if not cand.not_valid_before_utc <= when <= cand.not_valid_after_utc:
            raise OcspResponseError("OCSP delegated responder certificate is outside its validity")
        return cand
    raise OcspResponseError("OCSP response is not signed by the issuer or a delegated responder")


def verify_ocsp_response(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: int,
                         nonce: bytes | None = None, *,
                         above: Sequence[x509.Certificate] = ()) -> tuple[RevocationStatus, int]:
    """Verify a DER OCSP response for ``cert``; returns (status, nextUpdate as Unix s).

    ``above`` are the CAs above ``issuer`` (up to the root) that may also certify a
    delegated responder. Raises :class:`OcspResponseError` when the response must
    not be trusted.
    """
    try:
        return _verify_response(der, cert, [issuer, *above], now, nonce)
    except OcspResponseError:
        raise
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise OcspResponseError("OCSP response is malformed") from exc


def _verify_response(der: bytes, cert: x509.Certificate, authorities: list[x509.Certificate],
                     now: int, nonce: bytes | None) -> tuple[RevocationStatus, int]:
    issuer = authorities[0]
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise OcspResponseError("OCSP response does not parse") from exc
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspResponseError(f"OCSP responder answered {resp.response_status.name}")
    when = datetime.fromtimestamp(now, tz=UTC)
    _verify_sig(_signer(resp, authorities, when).public_key(), resp)
    singles = list(resp.responses)
    if len(singles) != 1:
        raise OcspResponseError("OCSP response must carry exactly one certificate status")
    single = singles[0]
    try:
        expected_id = _cert_id(cert, issuer, single.hash_algorithm)
    except (ValueError, TypeError) as exc:
        raise OcspResponseError("OCSP response uses an unsupported CertID hash") from exc
    if (single.serial_number != cert.serial_number
            or (single.issuer_name_hash, single.issuer_key_hash) != expected_id):
        raise OcspResponseError("OCSP response is about another certificate")
    if nonce is not None:
        try:
            echoed = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = None
        if echoed is not None and not constant_time_equal(echoed, nonce):
            raise OcspResponseError("OCSP response nonce does not match the request")
    nxt = single.next_update_utc
    if single.this_update_utc > when + CLOCK_SKEW or nxt is None or nxt + CLOCK_SKEW <= when:
        raise OcspResponseError("OCSP response is not current (thisUpdate/nextUpdate)")
    status = {ocsp.OCSPCertStatus.GOOD: RevocationStatus.GOOD,
              ocsp.OCSPCertStatus.REVOKED: RevocationStatus.REVOKED}.get(
        single.certificate_status, RevocationStatus.UNKNOWN)
    return status, int(nxt.timestamp())
