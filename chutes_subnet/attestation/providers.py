"""Miner-side evidence providers: real TDX (configfs-tsm / legacy device), NVIDIA
GPUs, and the INSECURE simulated provider for local development.

Every provider builds ``report_data`` with :func:`build_report_data` so the binding
is identical everywhere. ``collect`` is synchronous (the miner runs it in a thread).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from chutes_subnet.errors import AttestationError

from .binding import build_report_data
from .evidence import Evidence
from .simulated import SimulatedDevice

__all__ = [
    "EvidenceProvider",
    "TdxConfigfsProvider",
    "NvidiaGpuProvider",
    "HardwareProvider",
    "SimulatedProvider",
    "make_provider",
]

log = logging.getLogger(__name__)
TSM_REPORT_DIR = Path("/sys/kernel/config/tsm/report")
LEGACY_TDX_DEVICE = Path("/dev/tdx_guest")


class EvidenceProvider(Protocol):
    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str) -> Evidence:
        """Evidence bound to (nonce, e2e_pubkey, hotkey_ss58)."""
        ...


class TdxConfigfsProvider:
    """TDX quotes through the Linux configfs-tsm interface (kernel >= 6.7).

    Each call creates a report directory, writes ``inblob`` (the 64-byte
    report_data), reads ``outblob`` (the quote) and checks ``generation`` did not
    move in between (another writer would have raced us), then removes the directory.
    The legacy ``/dev/tdx_guest`` ioctl path needs the host's quote-generation service
    and is not implemented; its presence alone is reported clearly.
    """

    def __init__(self, tsm_dir: str | Path = TSM_REPORT_DIR) -> None:
        self.tsm_dir = Path(tsm_dir)
        if not self.tsm_dir.is_dir():
            hint = (" (/dev/tdx_guest exists: upgrade to a kernel with configfs-tsm)"
                    if LEGACY_TDX_DEVICE.exists() else "")
            raise AttestationError(f"no TDX quote interface at {self.tsm_dir}{hint}; "
                                   "is this a TDX guest? use kind='simulated' for development")

    def quote(self, report_data: bytes) -> bytes:
        """One quote over ``report_data`` (64 bytes)."""
        entry = Path(tempfile.mkdtemp(prefix="chutes-", dir=self.tsm_dir))
        try:
            gen_before = (entry / "generation").read_text().strip()
            (entry / "inblob").write_bytes(report_data)
            quote = (entry / "outblob").read_bytes()
            gen_after = (entry / "generation").read_text().strip()
            if int(gen_after) != int(gen_before) + 1:
                raise AttestationError("configfs-tsm report raced with another writer")
            if not quote:
                raise AttestationError("configfs-tsm returned an empty quote")
            return quote
        except (OSError, ValueError) as exc:
            raise AttestationError("TDX quote generation via configfs-tsm failed") from exc
        finally:
            try:
                os.rmdir(entry)
            except OSError:
                log.warning("could not remove configfs-tsm entry %s", entry)


class NvidiaGpuProvider:
    """GPU evidence through NVIDIA's ``nv-local-gpu-verifier`` package (lazy import)."""

    def __init__(self) -> None:
        try:
            from verifier import cc_admin  # type: ignore[import-not-found]
        except ImportError as exc:
            raise AttestationError("NVIDIA evidence needs the nv-local-gpu-verifier package "
                                   "(pip install nv-local-gpu-verifier) and the NVIDIA driver") from exc
        self._cc_admin = cc_admin

    def collect(self, nonce: bytes) -> list[dict[str, Any]]:
        """One entry per GPU, each made for ``nonce`` (32 bytes)."""
        try:
            entries = self._cc_admin.collect_gpu_evidence_remote(nonce.hex())
        except Exception as exc:  # noqa: BLE001 - foreign SDK, translated here
            raise AttestationError("NVIDIA GPU evidence collection failed") from exc
        return [dict(e, nonce=nonce.hex()) for e in entries]


class HardwareProvider:
    """A real TDX quote plus (optionally) NVIDIA GPU evidence."""

    def __init__(self, tdx: TdxConfigfsProvider, gpu: NvidiaGpuProvider | None = None) -> None:
        self.tdx, self.gpu = tdx, gpu

    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str) -> Evidence:
        quote = self.tdx.quote(build_report_data(nonce, e2e_pubkey, hotkey_ss58))
        gpus = self.gpu.collect(nonce) if self.gpu else []
        return Evidence(quote, gpus, simulated=False)


class SimulatedProvider:
    """INSECURE development evidence: real layouts, publicly known signing keys."""

    def __init__(self, *, debug: bool = False, gpu_count: int = 8, gpu_model: str = "H100",
                 bind_hotkey: str | None = None, seed: bytes | None = None) -> None:
        self.debug, self.bind_hotkey = debug, bind_hotkey
        self.device = SimulatedDevice(seed if seed is not None else os.urandom(32),
                                      gpu_model=gpu_model, gpu_count=gpu_count)
        log.warning("SIMULATED attestation provider in use: evidence is forgeable, "
                    "nothing is confidential (development only)")

    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str) -> Evidence:
        report_data = build_report_data(nonce, e2e_pubkey, self.bind_hotkey or hotkey_ss58)
        return Evidence(self.device.quote(report_data, debug=self.debug),
                        self.device.gpu_evidence(nonce), simulated=True)


def make_provider(kind: str, **opts: Any) -> EvidenceProvider:
    """``"tdx"`` (opts: ``gpus: bool = True``, ``tsm_dir``) or ``"simulated"``
    (opts: those of :class:`SimulatedProvider`). Fails at startup, not per challenge."""
    if kind == "simulated":
        return SimulatedProvider(**opts)
    if kind == "tdx":
        gpus = opts.pop("gpus", True)
        tdx = TdxConfigfsProvider(**opts)
        return HardwareProvider(tdx, NvidiaGpuProvider() if gpus else None)
    raise AttestationError(f"unknown evidence provider kind {kind!r} (use 'tdx' or 'simulated')")
