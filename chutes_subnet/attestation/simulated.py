"""Simulated TDX + GPU evidence for local development. INSECURE BY DESIGN.

Quotes use the real TDX v4 binary layout and the real report_data binding, but are
signed by keys derived from a *published* seed (:data:`DEV_SEED`): anybody can forge
them. They carry the QE vendor ID :data:`SIM_QE_VENDOR_ID`, which Intel's DCAP never
accepts, and the measurement profile ``simulated-dev``. GPU entries use the real
NVIDIA JSON/SPDM shape: leaf, per-GPU device identity CA, and a development root
also derived from the seed.

The verifier accepts this evidence only when constructed with
``dangerous_accept_simulated_tee=True`` and then marks every verdict ``simulated``.
Verification here mirrors DCAP's signature steps (PCK chain -> QE report signature ->
attestation-key binding -> quote signature) with the development root as anchor.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID

from chutes_subnet.errors import AttestationError

from ._pem import to_pem
from .gpu import CHIP_MODELS
from .policy import MeasurementProfile
from .quote import TD_ATTR_DEBUG, TD_ATTR_SEPT_VE_DISABLE, Measurements, TdxQuote
from .reasons import ReasonCode

__all__ = [
    "DEV_SEED",
    "SIMULATED_PROFILE_NAME",
    "SIM_QE_VENDOR_ID",
    "SimulatedDevice",
    "SimulatedVerificationError",
    "dev_gpu_root_der",
    "dev_gpu_root_key",
    "is_simulated_quote",
    "measure_simulated_profile",
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


def _derive_key(label: bytes, curve: ec.EllipticCurve, order: int) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(hashlib.sha512(DEV_SEED + b"/" + label).digest(), "big")
    return ec.derive_private_key(scalar % (order - 1) + 1, curve)


_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P384_N = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, serial: int) -> x509.Certificate:
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


_TDX_ROOT_CN = "Chutes Simulated PCK Root (INSECURE)"
_GPU_ROOT_CN = "Chutes Simulated GPU Identity Root (INSECURE)"


@lru_cache(maxsize=1)
def _tdx_root() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _derive_key(b"tdx-root", ec.SECP256R1(), _P256_N)
    return key, _cert(_TDX_ROOT_CN, key, _TDX_ROOT_CN, key, ca=True, serial=1)


@lru_cache(maxsize=1)
def _gpu_root() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _derive_key(b"gpu-root", ec.SECP384R1(), _P384_N)
    return key, _cert(_GPU_ROOT_CN, key, _GPU_ROOT_CN, key, ca=True, serial=1)


def dev_gpu_root_der() -> bytes:
    """DER of the development GPU root (deterministic from :data:`DEV_SEED`)."""
    return _gpu_root()[1].public_bytes(serialization.Encoding.DER)


def dev_gpu_root_key() -> ec.EllipticCurvePrivateKey:
    """The development GPU root's private key (public by design: it signs test OCSP answers)."""
    return _gpu_root()[0]


def simulated_measurements() -> Measurements:
    """The fixed MRTD/RTMR0-3 every simulated quote reports."""
    regs = [hashlib.sha384(DEV_SEED + b"/" + n).digest() for n in
            (b"mrtd", b"rtmr0", b"rtmr1", b"rtmr2", b"rtmr3")]
    return Measurements(*regs)


def measure_simulated_profile(*, gpu_model: str = "H100", gpu_count: int = 8) -> MeasurementProfile:
    """The ``simulated-dev`` profile that :meth:`Policy.development` allowlists.

    RTMR3 is not pinned: the simulated TD extends it with the workload event."""
    return MeasurementProfile(SIMULATED_PROFILE_NAME, simulated_measurements(),
                              gpu_model if gpu_count else None, gpu_count, pin_rtmr3=False)


#: TD fields of every simulated quote (a made-up TDX module; XFAM/SVN like a real TD)
SIM_MRSEAM = hashlib.sha384(DEV_SEED + b"/mrseam").digest()
SIM_XFAM = bytes.fromhex("e702060000000000")
SIM_TEE_TCB_SVN = bytes.fromhex("06010300") + bytes(12)


def simulated_td_fields() -> dict[str, bytes]:
    """The ``[td]`` values a simulated quote carries (for :meth:`Policy.with_simulated`)."""
    return {"mrseam": SIM_MRSEAM, "attributes": TD_ATTR_SEPT_VE_DISABLE.to_bytes(8, "little"),
            "xfam": SIM_XFAM, "mrconfigid": bytes(48), "mrowner": bytes(48),
            "mrownerconfig": bytes(48), "min_tee_tcb_svn": SIM_TEE_TCB_SVN}


def _raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    size = (key.curve.key_size + 7) // 8
    algo = hashes.SHA384() if size == 48 else hashes.SHA256()
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(algo)))
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


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


@dataclass
class SimulatedDevice:
    """One simulated TD plus GPUs; per-instance keys from ``seed`` (random if None)."""

    seed: bytes
    gpu_model: str = "H100"
    gpu_count: int = 8

    def __post_init__(self) -> None:
        chips = {model: (chip, arch) for chip, (arch, model) in CHIP_MODELS.items()}
        if self.gpu_model not in chips:
            raise ValueError(f"simulated GPU model must be one of {sorted(chips)}")
        self.chip, self.arch = chips[self.gpu_model]
        inst = hashlib.sha256(self.seed).hexdigest().encode()
        root_key, root = _tdx_root()
        self.att_key = _derive_key(b"att/" + inst, ec.SECP256R1(), _P256_N)
        pck_key = _derive_key(b"pck/" + inst, ec.SECP256R1(), _P256_N)
        self.pck_key = pck_key
        leaf = _cert("Chutes Simulated PCK (INSECURE)", pck_key, _TDX_ROOT_CN, root_key,
                     ca=False, serial=int.from_bytes(inst[:8], "big"))
        self.pck_pem = b"".join(to_pem(c.public_bytes(serialization.Encoding.DER)) for c in (leaf, root))
        gpu_root_key, gpu_root = _gpu_root()
        root_pem = to_pem(gpu_root.public_bytes(serialization.Encoding.DER))
        self.gpus: list[tuple[ec.EllipticCurvePrivateKey, bytes]] = []
        for i in range(self.gpu_count):
            # like NVIDIA: a per-device identity CA ("BROM") certifies the firmware's leaf key
            device_key = _derive_key(b"gpu-device/%d/" % i + inst, ec.SECP384R1(), _P384_N)
            device_cn = f"{self.chip} A01 GSP BROM SIMULATED {inst[:16].decode()}/{i}"
            device = _cert(device_cn, device_key, _GPU_ROOT_CN, gpu_root_key, ca=True,
                           serial=int.from_bytes(inst[16:24], "big") * 64 + i)
            key = _derive_key(b"gpu/%d/" % i + inst, ec.SECP384R1(), _P384_N)
            cert = _cert(f"{self.chip} A01 GSP FMC LF SIMULATED", key, device_cn, device_key,
                         ca=False, serial=1000 + i)
            self.gpus.append((key, b"".join(to_pem(c.public_bytes(serialization.Encoding.DER))
                                            for c in (cert, device)) + root_pem))

    def quote(self, report_data: bytes, *, debug: bool = False, rtmr3: bytes | None = None) -> bytes:
        """A TDX v4 quote over ``report_data`` signed with the development keys.

        ``rtmr3`` is the simulated TD's runtime register (default: the fixed value of
        :func:`simulated_measurements`).
        """
        if len(report_data) != 64:
            raise ValueError("report_data must be 64 bytes")
        if rtmr3 is not None and len(rtmr3) != 48:
            raise ValueError("rtmr3 must be 48 bytes")
        header = struct.pack("<HHI4s16s20s", 4, 2, 0x81, bytes(4), SIM_QE_VENDOR_ID, bytes(20))
        attrs = TD_ATTR_SEPT_VE_DISABLE | (TD_ATTR_DEBUG if debug else 0)
        m = simulated_measurements()
        body = b"".join([
            SIM_TEE_TCB_SVN, SIM_MRSEAM, bytes(48), bytes(8), attrs.to_bytes(8, "little"),
            SIM_XFAM, m.mrtd, bytes(48), bytes(48), bytes(48),
            m.rtmr0, m.rtmr1, m.rtmr2, m.rtmr3 if rtmr3 is None else rtmr3, report_data,
        ])
        pub = self.att_key.public_key().public_numbers()
        att_pub = pub.x.to_bytes(32, "big") + pub.y.to_bytes(32, "big")
        auth = bytes(range(32))
        qe_report = bytes(320) + hashlib.sha256(att_pub + auth).digest() + bytes(32)
        pem = self.pck_pem + b"\x00"
        qe_cert = (qe_report + _raw_sig(self.pck_key, qe_report) + struct.pack("<H", len(auth))
                   + auth + struct.pack("<HI", 5, len(pem)) + pem)
        sig_data = (_raw_sig(self.att_key, header + body) + att_pub
                    + struct.pack("<HI", 6, len(qe_cert)) + qe_cert)
        return header + body + struct.pack("<I", len(sig_data)) + sig_data

    def gpu_evidence(self, nonce: bytes, *, devtools: bool = False) -> list[dict[str, Any]]:
        """NVIDIA-shaped entries for every simulated GPU, answering ``nonce``
        (``devtools``: the GPUs state DevTools mode, as NVML would report it)."""
        out = []
        for i, (key, chain_pem) in enumerate(self.gpus):
            request = bytes([0x11, 0xE0, 0x01, 0xFF]) + nonce + b"\x00"
            record = b"".join(
                bytes([idx, 0x01]) + struct.pack("<H", 51) + b"\x01" + struct.pack("<H", 48)
                + hashlib.sha384(DEV_SEED + b"/gpu-measurement/%d" % idx).digest()
                for idx in range(1, 5)
            )
            opaque = (struct.pack("<HH", 3, 10) + b"simulated\x00"
                      + struct.pack("<HH", 6, 8) + bytes(8))
            responder_nonce = hashlib.sha256(self.seed + nonce + bytes([i])).digest()
            response = (bytes([0x11, 0x60, 0x00, 0x00, 4]) + len(record).to_bytes(3, "little")
                        + record + responder_nonce + struct.pack("<H", len(opaque)) + opaque)
            signed = request + response
            out.append({
                "arch": self.arch,
                "certificate": base64.b64encode(chain_pem).decode(),
                "evidence": base64.b64encode(signed + _raw_sig(key, signed)).decode(),
                "nonce": nonce.hex(),
                "driver_version": "simulated",
                "vbios_version": "00.00.00.00.00",
                "version": "1.0",
                "cc_enabled": True,
                "devtools": devtools,
            })
        return out


def new_seed() -> bytes:
    return os.urandom(32)


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
    root_der = _tdx_root()[1].public_bytes(serialization.Encoding.DER)
    if len(chain) != 2 or not hmac.compare_digest(chain[1], root_der):
        raise bad_chain
    try:
        leaf = x509.load_der_x509_certificate(chain[0])
        leaf.verify_directly_issued_by(_tdx_root()[1])
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
