"""The simulated TD and GPUs: development evidence. INSECURE BY DESIGN.

:class:`SimulatedDevice` makes TDX v4 quotes and NVIDIA-shaped GPU evidence signed with
keys derived from the published :data:`~..verify.simulated_tee.DEV_SEED`;
its runtime registers are :class:`~chutes_subnet.attestation.providers.rtmr.SimulatedRtmr`. What the verifier
checks about this evidence lives in :mod:`chutes_subnet.attestation.verify.simulated_tee`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from chutes_subnet.attestation.verify._pem import to_pem
from chutes_subnet.attestation.verify.gpu import CHIP_MODELS
from chutes_subnet.attestation.verify.quote import TD_ATTR_DEBUG, TD_ATTR_SEPT_VE_DISABLE
from chutes_subnet.attestation.verify.simulated_tee import (
    DEV_GPU_ROOT_CN,
    DEV_SEED,
    DEV_TDX_ROOT_CN,
    P256_ORDER,
    P384_ORDER,
    SIM_MRSEAM,
    SIM_QE_VENDOR_ID,
    SIM_TEE_TCB_SVN,
    SIM_XFAM,
    derive_dev_key,
    dev_certificate,
    dev_gpu_root,
    dev_tdx_root,
    simulated_measurements,
)

__all__ = ["SimulatedDevice", "new_seed"]


def _raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    size = (key.curve.key_size + 7) // 8
    algo = hashes.SHA384() if size == 48 else hashes.SHA256()
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(algo)))
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")



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
        root_key, root = dev_tdx_root()
        self.att_key = derive_dev_key(b"att/" + inst, ec.SECP256R1(), P256_ORDER)
        pck_key = derive_dev_key(b"pck/" + inst, ec.SECP256R1(), P256_ORDER)
        self.pck_key = pck_key
        leaf = dev_certificate("Chutes Simulated PCK (INSECURE)", pck_key, DEV_TDX_ROOT_CN, root_key,
                     ca=False, serial=int.from_bytes(inst[:8], "big"))
        self.pck_pem = b"".join(to_pem(c.public_bytes(serialization.Encoding.DER)) for c in (leaf, root))
        gpu_root_key, gpu_root = dev_gpu_root()
        root_pem = to_pem(gpu_root.public_bytes(serialization.Encoding.DER))
        self.gpus: list[tuple[ec.EllipticCurvePrivateKey, bytes]] = []
        for i in range(self.gpu_count):
            # like NVIDIA: a per-device identity CA ("BROM") certifies the firmware's leaf key
            device_key = derive_dev_key(b"gpu-device/%d/" % i + inst, ec.SECP384R1(), P384_ORDER)
            device_cn = f"{self.chip} A01 GSP BROM SIMULATED {inst[:16].decode()}/{i}"
            device = dev_certificate(device_cn, device_key, DEV_GPU_ROOT_CN, gpu_root_key, ca=True,
                           serial=int.from_bytes(inst[16:24], "big") * 64 + i)
            key = derive_dev_key(b"gpu/%d/" % i + inst, ec.SECP384R1(), P384_ORDER)
            cert = dev_certificate(f"{self.chip} A01 GSP FMC LF SIMULATED", key, device_cn, device_key,
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
    """A fresh per-instance seed for :class:`SimulatedDevice`."""
    return os.urandom(32)
