"""Hardware identities in verified evidence, so a validator counts each machine once.

* TDX platform: the PPID (Platform Provisioning ID) in the PCK certificate's Intel SGX
  extension (OID 1.2.840.113741.1.13.1, entry 1.2.840.113741.1.13.1.1, a 16-byte
  OCTET STRING) -> ``"ppid:<hex>"``. The PPID is per CPU package and survives TCB
  recovery (a new PCK certificate); a PCK certificate without it (the simulated TD)
  falls back to ``"pck:<SHA-256 of its public key>"``.
* GPU: the device identity certificate (the per-device CA that certifies the
  firmware's attestation key, stable for the life of the GPU) ->
  ``"gpu:<SHA-256 of the certificate>"`` (first 32 hex digits).

Only ever read from evidence whose signatures verified. Pure functions.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .gpu import GpuReport
from .quote import TdxQuote

__all__ = ["SGX_EXTENSION_OID", "gpu_identity", "platform_identity"]

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
#: DER of ``OBJECT IDENTIFIER 1.2.840.113741.1.13.1.1`` followed by ``OCTET STRING (16)``
_PPID_TLV = bytes.fromhex("060a2a864886f84d010d0101") + bytes.fromhex("0410")


def _ppid(leaf: x509.Certificate) -> bytes | None:
    for ext in leaf.extensions:
        if ext.oid.dotted_string == SGX_EXTENSION_OID and isinstance(
                ext.value, x509.UnrecognizedExtension):
            raw = ext.value.value
            at = raw.find(_PPID_TLV)
            if at >= 0 and len(raw) >= at + len(_PPID_TLV) + 16:
                return raw[at + len(_PPID_TLV): at + len(_PPID_TLV) + 16]
    return None


def platform_identity(quote: TdxQuote) -> str:
    """The platform a (verified) quote comes from; ``ValueError`` if it has no PCK."""
    chain = quote.qe.pck_chain_der
    if not chain:
        raise ValueError("quote carries no PCK certificate")
    leaf = x509.load_der_x509_certificate(chain[0])
    ppid = _ppid(leaf)
    if ppid is not None:
        return "ppid:" + ppid.hex()
    spki = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "pck:" + hashlib.sha256(spki).hexdigest()


def gpu_identity(report: GpuReport) -> str:
    """The physical GPU behind a verified report (its device identity certificate)."""
    return "gpu:" + hashlib.sha256(report.issuer_der).hexdigest()[:32]
