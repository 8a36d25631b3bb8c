"""The simulated development TEE as the verifier sees it. INSECURE BY DESIGN.

Simulated quotes (made by :mod:`chutes_subnet.attestation.simulator`) use the real TDX
v4 binary layout and the real report_data binding, but are signed by keys derived from
a *published* seed (:data:`DEV_SEED`): anybody can forge them. They carry the QE vendor
ID :data:`SIM_QE_VENDOR_ID`, which Intel's DCAP never accepts, and the measurement
profile ``simulated-dev``. GPU entries chain to a development root also derived from
the seed.

This module holds what checking them needs: the development roots (derived here, so
the verifier does not depend on the simulator), the fixed measurements and TD fields a
simulated quote reports, and :func:`verify_simulated_quote`, which mirrors DCAP's
signature steps (PCK chain -> QE report signature -> attestation-key binding -> quote
signature) with the development root as anchor. The verifier accepts this evidence
only when constructed with ``dangerous_accept_simulated_tee=True`` and then marks
every verdict ``simulated``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from chutes_subnet.errors import AttestationError

from .quote import TD_ATTR_SEPT_VE_DISABLE, Measurements, TdxQuote
from .reasons import ReasonCode

__all__ = [
    "DEV_SEED",
    "DEV_GPU_ROOT_CN",
    "DEV_TDX_ROOT_CN",
    "P256_ORDER",
    "P384_ORDER",
    "SIM_MRSEAM",
    "SIM_TEE_TCB_SVN",
    "SIM_XFAM",
    "SIMULATED_PROFILE_NAME",
    "SIM_QE_VENDOR_ID",
    "SimulatedVerificationError",
    "derive_dev_key",
    "dev_certificate",
    "dev_gpu_root",
    "dev_gpu_root_der",
    "dev_gpu_root_key",
    "dev_tdx_root",
    "is_simulated_quote",
    "simulated_measurements",
    "simulated_td_fields",
    "verify_simulated_quote",
]

DEV_SEED = b"chutes-subnet/dev-attestation/v1/INSECURE-PUBLIC-SEED"
SIM_QE_VENDOR_ID = b"CHUTES-SIMULATED"
SIMULATED_PROFILE_NAME = "simulated-dev"
_NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
_NOT_AFTER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


class SimulatedVerificationError(AttestationError):
    def __init__(self, code: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def derive_dev_key(label: bytes, curve: ec.EllipticCurve, order: int) -> ec.EllipticCurvePrivateKey:
    """The development key named ``label`` (anybody can derive it from :data:`DEV_SEED`)."""
    scalar = int.from_bytes(hashlib.sha512(DEV_SEED + b"/" + label).digest(), "big")
    return ec.derive_private_key(scalar % (order - 1) + 1, curve)


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)


def dev_certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                    issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool,
                    serial: int) -> x509.Certificate:
    """A development certificate (deterministic ECDSA: same inputs, same bytes)."""
    algo = hashes.SHA384() if isinstance(issuer_key.curve, ec.SECP384R1) else hashes.SHA256()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, algo, ecdsa_deterministic=True)


DEV_TDX_ROOT_CN = "Chutes Simulated PCK Root (INSECURE)"
DEV_GPU_ROOT_CN = "Chutes Simulated GPU Identity Root (INSECURE)"


@lru_cache(maxsize=1)
def dev_tdx_root() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The development PCK root: key and self-signed certificate."""
    key = derive_dev_key(b"tdx-root", ec.SECP256R1(), P256_ORDER)
    return key, dev_certificate(DEV_TDX_ROOT_CN, key, DEV_TDX_ROOT_CN, key, ca=True, serial=1)


@lru_cache(maxsize=1)
def dev_gpu_root() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The development GPU identity root: key and self-signed certificate."""
    key = derive_dev_key(b"gpu-root", ec.SECP384R1(), P384_ORDER)
    return key, dev_certificate(DEV_GPU_ROOT_CN, key, DEV_GPU_ROOT_CN, key, ca=True, serial=1)


def dev_gpu_root_der() -> bytes:
    """DER of the development GPU root (deterministic from :data:`DEV_SEED`)."""
    return dev_gpu_root()[1].public_bytes(serialization.Encoding.DER)


def dev_gpu_root_key() -> ec.EllipticCurvePrivateKey:
    """The development GPU root's private key (public by design: it signs test OCSP answers)."""
    return dev_gpu_root()[0]


def simulated_measurements() -> Measurements:
    """The fixed MRTD/RTMR0-3 every simulated quote reports."""
    regs = [hashlib.sha384(DEV_SEED + b"/" + n).digest() for n in
            (b"mrtd", b"rtmr0", b"rtmr1", b"rtmr2", b"rtmr3")]
    return Measurements(*regs)


#: TD fields of every simulated quote (a made-up TDX module; XFAM/SVN like a real TD)
SIM_MRSEAM = hashlib.sha384(DEV_SEED + b"/mrseam").digest()
SIM_XFAM = bytes.fromhex("e702060000000000")
SIM_TEE_TCB_SVN = bytes.fromhex("06010300") + bytes(12)


def simulated_td_fields() -> dict[str, bytes]:
    """The ``[td]`` values a simulated quote carries (for :meth:`Policy.with_simulated`)."""
    return {"mrseam": SIM_MRSEAM, "attributes": TD_ATTR_SEPT_VE_DISABLE.to_bytes(8, "little"),
            "xfam": SIM_XFAM, "mrconfigid": bytes(48), "mrowner": bytes(48),
            "mrownerconfig": bytes(48), "min_tee_tcb_svn": SIM_TEE_TCB_SVN}


def _verify_raw(pub: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    half = len(sig) // 2
    der = encode_dss_signature(int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big"))
    try:
        pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def is_simulated_quote(quote: TdxQuote) -> bool:
    """True when the quote claims the development quoting enclave."""
    return hmac.compare_digest(quote.header.qe_vendor_id, SIM_QE_VENDOR_ID)


def verify_simulated_quote(quote: TdxQuote, now: int) -> None:
    """Check a simulated quote's signatures against the development root.

    Raises ``SimulatedVerificationError`` (code ``quote_signature_invalid`` or
    ``quote_cert_chain_invalid``). Says nothing about security: the keys are public.
    """
    bad_chain = SimulatedVerificationError(
        ReasonCode.QUOTE_CERT_CHAIN_INVALID, "simulated quote is not chained to the development root")
    bad_sig = SimulatedVerificationError(
        ReasonCode.QUOTE_SIGNATURE_INVALID, "simulated quote signature is invalid")
    if not is_simulated_quote(quote):
        raise bad_sig
    chain = quote.qe.pck_chain_der
    root_der = dev_tdx_root()[1].public_bytes(serialization.Encoding.DER)
    if len(chain) != 2 or not hmac.compare_digest(chain[1], root_der):
        raise bad_chain
    try:
        leaf = x509.load_der_x509_certificate(chain[0])
        leaf.verify_directly_issued_by(dev_tdx_root()[1])
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise bad_chain from exc
    when = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    if not leaf.not_valid_before_utc <= when <= leaf.not_valid_after_utc:
        raise bad_chain
    leaf_key = leaf.public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey):
        raise bad_chain
    if not _verify_raw(leaf_key, quote.qe.qe_report_signature, quote.qe.qe_report):
        raise bad_sig
    expected = hashlib.sha256(quote.attestation_key + quote.qe.auth_data).digest() + bytes(32)
    if not hmac.compare_digest(quote.qe.qe_report[320:384], expected):
        raise bad_sig
    try:
        att = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + quote.attestation_key)
    except ValueError as exc:
        raise bad_sig from exc
    if not _verify_raw(att, quote.signature, quote.signed_bytes):
        raise bad_sig
