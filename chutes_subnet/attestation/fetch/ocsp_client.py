"""The validator's OCSP client for GPU certificate chains, with a disk + memory cache.

:class:`GpuOnlineChecker` (a :class:`~chutes_subnet.attestation.verify.ocsp.RevocationChecker`
the validator injects into the verifier) asks an OCSP responder about the certificates
of a GPU chain (leaf first): all but the self-signed root, and by default not the leaf
either, since the leaf is the key the GPU firmware generates at boot and NVIDIA's
OCSP service only knows the device identity certificate and the CAs above it (the
same range NVIDIA's own verifier checks). The URL is a configured override (e.g.
NVIDIA's ``https://ocsp.ndis.nvidia.com/``) or the certificate's AIA ``OCSP`` entry.
Responses are judged by :func:`~chutes_subnet.attestation.verify.ocsp.verify_ocsp_response`.

Verified responses are cached on disk (``<cache_dir>/<issuer key hash>-<serial>.der``,
at most :data:`MAX_CACHED` files, oldest dropped first) and in memory until
``nextUpdate``; cached bytes are re-verified on load, so a validator restarted while
offline keeps its answers until they expire. Network and
response problems never raise: the chain's outcome is then "skipped".
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from chutes_subnet.attestation.verify.ocsp import (
    MAX_OCSP_RESPONSE,
    ChainRevocation,
    OcspResponseError,
    RevocationStatus,
    build_ocsp_request,
    key_sha1,
    ocsp_url_of,
    verify_ocsp_response,
)

__all__ = ["MAX_CACHED", "RESPONDER_BACKOFF", "GpuOnlineChecker"]

log = logging.getLogger(__name__)
MAX_CACHED = 8192
#: After a failed request, a responder is not asked again for this long (seconds).
RESPONDER_BACKOFF = 60.0

Poster = Callable[[str, bytes, float], bytes]


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
        ikh = key_sha1(issuer).hex()
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
