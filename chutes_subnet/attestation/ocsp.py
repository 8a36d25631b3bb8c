"""Optional online revocation check of GPU certificate chains (OCSP, RFC 6960).

:class:`GpuOnlineChecker` asks an OCSP responder about the certificates of a GPU
chain (leaf first): all but the self-signed root, and by default not the leaf
either, since the leaf is the key the GPU firmware generates at boot and NVIDIA's
OCSP service only knows the device identity certificate and the CAs above it (the
same range NVIDIA's own verifier checks). The URL is a configured override (e.g.
NVIDIA's ``https://ocsp.ndis.nvidia.com/``) or the certificate's AIA ``OCSP`` entry.

A response counts only if it is SUCCESSFUL, names exactly this (issuer name/key
hash, serial), is current (``thisUpdate`` <= now < ``nextUpdate``, small clock
skew), echoes our nonce when it carries one, and is signed by the issuer or by a
responder certificate with the OCSPSigning EKU, valid now, and signed by the issuer
or a CA above it in the (already verified, pinned-root) chain.

Verified responses are cached on disk (``<cache_dir>/<issuer key hash>-<serial>.der``,
at most :data:`MAX_CACHED` files, oldest dropped first) and in memory until
``nextUpdate``; cached bytes are re-verified on load, so a validator restarted while
offline keeps its answers until they expire. Network and
response problems never raise: the chain's outcome is then "skipped".
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
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
    "GpuOnlineChecker",
    "OcspResponseError",
    "RevocationStatus",
    "build_ocsp_request",
    "ocsp_url_of",
    "verify_ocsp_response",
]

log = logging.getLogger(__name__)
NVIDIA_OCSP_URL = "https://ocsp.ndis.nvidia.com/"
REVOCATION_SKIPPED_NOTE = "gpu revocation check skipped (offline)"
REVOCATION_UNUSABLE_NOTE = "gpu revocation check skipped (unusable OCSP response)"
MAX_OCSP_RESPONSE = 64 * 1024
MAX_CACHED = 8192
CLOCK_SKEW = timedelta(minutes=5)
#: After a failed request, a responder is not asked again for this long (seconds).
RESPONDER_BACKOFF = 60.0

Poster = Callable[[str, bytes, float], bytes]


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


def _key_sha1(cert: x509.Certificate) -> bytes:
    """SHA-1 of the certificate's public key BIT STRING (OCSP KeyHash, RFC 6960 4.2.1)."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _cert_id(cert: x509.Certificate, issuer: x509.Certificate,
             algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    return req.issuer_name_hash, req.issuer_key_hash


def _verify_sig(key: object, resp: ocsp.OCSPResponse) -> None:
    algo = resp.signature_hash_algorithm
    if algo is None:
        raise OcspResponseError("OCSP response signature algorithm is unsupported")
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(algo))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), algo)
        else:
            raise OcspResponseError("OCSP responder key type is unsupported")
    except InvalidSignature as exc:
        raise OcspResponseError("OCSP response signature is invalid") from exc


def _names_responder(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if resp.responder_key_hash is not None:
        return constant_time_equal(resp.responder_key_hash, _key_sha1(cert))
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


def _http_post(url: str, body: bytes, timeout: float) -> bytes:
    headers = {"Content-Type": "application/ocsp-request", "Accept": "application/ocsp-response"}
    with httpx.stream("POST", url, content=body, headers=headers, timeout=timeout,
                      follow_redirects=False) as resp:
        if resp.status_code != 200:
            raise OSError(f"OCSP responder HTTP {resp.status_code}")
        out = bytearray()
        for chunk in resp.iter_bytes():
            out += chunk
            if len(out) > MAX_OCSP_RESPONSE:
                raise OSError("OCSP response too large")
        return bytes(out)


def _bound_disk(cache_dir: Path) -> None:
    """Keep at most :data:`MAX_CACHED` answers on disk: drop the oldest half."""
    files = list(cache_dir.glob("*.der"))
    if len(files) < MAX_CACHED:
        return
    files.sort(key=lambda f: f.stat().st_mtime)
    for old in files[: len(files) - MAX_CACHED // 2]:
        old.unlink(missing_ok=True)


class GpuOnlineChecker:
    """OCSP revocation checks for GPU chains, with a disk + memory cache.

    ``url`` overrides every certificate's AIA responder; ``post`` (url, body,
    timeout) -> response bytes is injectable (default: httpx, no redirects). A
    responder that failed is not asked again for :data:`RESPONDER_BACKOFF` seconds,
    so an outage costs one timeout, not one per certificate.
    """

    def __init__(self, cache_dir: str | Path | None = None, *, url: str | None = None,
                 timeout: float = 5.0, post: Poster | None = None, check_leaf: bool = False) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.check_leaf = check_leaf
        self.url, self.timeout = url, float(timeout)
        self._post = post or _http_post
        self._lock = threading.Lock()
        self._memory: dict[str, tuple[bytes, RevocationStatus, int]] = {}
        self._down_until: dict[str, float] = {}

    def check_chain(self, chain_der: Sequence[bytes], now: int) -> ChainRevocation:
        """Status of the non-root certificates of ``chain_der`` (leaf first) at ``now``;
        the leaf only with ``check_leaf``."""
        try:
            certs = [x509.load_der_x509_certificate(d) for d in chain_der]
        except ValueError:
            return ChainRevocation(RevocationStatus.SKIPPED_UNUSABLE)
        worst = RevocationStatus.GOOD
        for i in range(0 if self.check_leaf else 1, len(certs) - 1):
            try:
                status = self._status(certs[i], certs[i + 1:], now)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                log.warning("GPU certificate %d cannot be checked over OCSP", i)
                status = RevocationStatus.SKIPPED_UNUSABLE
            if status in (RevocationStatus.REVOKED, RevocationStatus.UNKNOWN):
                return ChainRevocation(status, i)
            if status != RevocationStatus.GOOD and worst != RevocationStatus.SKIPPED_UNUSABLE:
                worst = status
        return ChainRevocation(worst)

    def _key(self, cert: x509.Certificate, issuer: x509.Certificate) -> str:
        ikh = _key_sha1(issuer).hex()
        return f"{ikh}-{cert.serial_number:x}"

    def _cached(self, key: str, cert: x509.Certificate, authorities: Sequence[x509.Certificate],
                now: int) -> RevocationStatus | None:
        hit = self._memory.get(key)
        if hit is not None and now < hit[2]:
            return hit[1]
        if self.cache_dir is None:
            return None
        try:
            der = (self.cache_dir / f"{key}.der").read_bytes()
            status, nxt = verify_ocsp_response(der, cert, authorities[0], now, above=authorities[1:])
        except (OSError, OcspResponseError):
            return None
        self._memory[key] = (der, status, nxt)
        return status

    def _store(self, key: str, der: bytes) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            _bound_disk(self.cache_dir)
            tmp = self.cache_dir / f".{key}.{os.getpid()}.tmp"
            tmp.write_bytes(der)
            os.replace(tmp, self.cache_dir / f"{key}.der")
        except OSError:
            log.warning("could not write the OCSP cache under %s", self.cache_dir)

    def _status(self, cert: x509.Certificate, authorities: Sequence[x509.Certificate],
                now: int) -> RevocationStatus:
        issuer = authorities[0]
        key = self._key(cert, issuer)
        with self._lock:
            cached = self._cached(key, cert, authorities, now)
        if cached is not None:
            return cached
        url = self.url or ocsp_url_of(cert)
        if url is None or time.monotonic() < self._down_until.get(url, 0.0):
            return RevocationStatus.SKIPPED_OFFLINE
        nonce = os.urandom(16)
        try:
            der = self._post(url, build_ocsp_request(cert, issuer, nonce), self.timeout)
        except (OSError, httpx.HTTPError) as exc:
            log.warning("OCSP request to %s failed (%s)", url, type(exc).__name__)
            self._down_until[url] = time.monotonic() + RESPONDER_BACKOFF
            return RevocationStatus.SKIPPED_OFFLINE
        try:
            status, nxt = verify_ocsp_response(der, cert, issuer, now, nonce, above=authorities[1:])
        except OcspResponseError as exc:
            log.warning("unusable OCSP response from %s: %s", url, exc)
            return RevocationStatus.SKIPPED_UNUSABLE
        with self._lock:
            if len(self._memory) >= MAX_CACHED:
                self._memory.clear()
            self._memory[key] = (der, status, nxt)
            self._store(key, der)
        return status
