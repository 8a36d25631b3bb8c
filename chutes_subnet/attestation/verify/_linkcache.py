"""Certificate links whose signature was already verified, remembered across calls.

A link is ``(certificate DER, issuer DER)``. Whether the issuer's key signed the
certificate is a pure function of those bytes, so a verified link can be trusted
again without redoing the signature check; everything that depends on time (validity
windows) or policy (CA flags, the pinned root) is still checked on every call. A
validator attesting thousands of GPUs a round meets the same device and CA
certificates every time: only links it has never seen cost an ECDSA P-384 check.

Entries are SHA-256 digests of the two DER blobs (64 bytes each), least recently used
dropped first beyond ``maxsize``. Thread-safe; one cache per process
(:data:`SHARED_LINKS`), and a process pool has one per worker.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

__all__ = ["SHARED_LINKS", "VerifiedLinkCache"]


class VerifiedLinkCache:
    """A bounded set of verified ``(certificate DER, issuer DER)`` links."""

    def __init__(self, maxsize: int = 65_536) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._maxsize = maxsize
        self._entries: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(link: tuple[bytes, bytes]) -> bytes:
        return hashlib.sha256(link[0]).digest() + hashlib.sha256(link[1]).digest()

    def __contains__(self, link: object) -> bool:
        if not (isinstance(link, tuple) and len(link) == 2):
            return False
        key = self._key(link)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return True
        return False

    def add(self, link: tuple[bytes, bytes]) -> None:
        """Remember a link whose signature verified."""
        key = self._key(link)
        with self._lock:
            self._entries[key] = None
            self._entries.move_to_end(key)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: The process-wide cache :func:`~chutes_subnet.attestation.verify.gpu.verify_gpu_evidence` uses.
SHARED_LINKS = VerifiedLinkCache()
