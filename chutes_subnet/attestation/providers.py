"""Miner-side evidence providers: real TDX (configfs-tsm / legacy device), NVIDIA
GPUs, and the INSECURE simulated provider for local development.

Every provider builds ``report_data`` with :func:`build_report_data` so the binding
is identical everywhere. ``collect`` is synchronous (the miner runs it in a thread).
``measure_workload(manifest)`` extends RTMR3 with the workload event once, at
instance start, before the E2EE key exists (:mod:`.rtmr`); ``collect`` then returns
the RTMR3 event log and the manifest next to the quote.
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
from .manifest import WorkloadManifest
from .qgs import DEFAULT_QGS_ADDRESS, QgsClient
from .rtmr import DEFAULT_EVENT_LOG, SYSFS_MEASUREMENTS, RuntimeLog, SimulatedRtmr, rtmr_device
from .simulated import SimulatedDevice
from .tdx_guest import LEGACY_TDX_DEVICE, TdxGuestDeviceProvider

__all__ = [
    "EvidenceProvider",
    "HardwareProvider",
    "NvidiaGpuProvider",
    "SimulatedProvider",
    "TdxConfigfsProvider",
    "TdxGuestDeviceProvider",
    "TdxQuoter",
    "make_provider",
]

log = logging.getLogger(__name__)
TSM_REPORT_DIR = Path("/sys/kernel/config/tsm/report")
#: Environment variable naming the QGS address when none is passed to make_provider.
QGS_ADDRESS_ENV = "CHUTES_QGS_ADDRESS"


class EvidenceProvider(Protocol):
    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str,
                receipt_pubkey: bytes | None = None) -> Evidence:
        """Evidence bound to (nonce, e2e_pubkey, hotkey_ss58[, receipt_pubkey]): report_data
        layout v2 with a receipt key, v1 without (:mod:`.binding`)."""
        ...


class TdxQuoter(Protocol):
    def quote(self, report_data: bytes) -> bytes:
        """A TDX quote over ``report_data`` (64 bytes)."""
        ...


class TdxConfigfsProvider:
    """TDX quotes through the Linux configfs-tsm interface (kernel >= 6.7).

    Each call creates a report directory, writes ``inblob`` (the 64-byte
    report_data), reads ``outblob`` (the quote) and checks ``generation`` did not
    move in between (another writer would have raced us), then removes the directory.
    Older kernels use :class:`TdxGuestDeviceProvider` (``/dev/tdx_guest`` + QGS).
    """

    def __init__(self, tsm_dir: str | Path = TSM_REPORT_DIR) -> None:
        self.tsm_dir = Path(tsm_dir)
        if not self.tsm_dir.is_dir():
            raise AttestationError(
                f"no configfs-tsm TDX quote interface at {self.tsm_dir}; is this a TDX guest? "
                "for development only, run the miner with --tee simulated (forgeable evidence)")

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
        except Exception as exc:  # foreign SDK, translated here
            raise AttestationError("NVIDIA GPU evidence collection failed") from exc
        return [dict(e, nonce=nonce.hex(), **self._modes()) for e in entries]

    @staticmethod
    def _modes() -> dict[str, bool]:
        """CC / DevTools state from NVML (unsigned: lets validators refuse honest
        misconfiguration; the signed check is the RIM comparison)."""
        try:
            from verifier.nvml import NvmlHandler  # type: ignore[import-not-found]

            return {"cc_enabled": bool(NvmlHandler.is_cc_enabled()),
                    "devtools": bool(NvmlHandler.is_cc_dev_mode())}
        except Exception:  # noqa: BLE001 - foreign SDK; the state is then not stated
            log.warning("could not read the GPU CC/DevTools state from NVML")
            return {}


class _Workload:
    """The measured manifest and RTMR3 log shared by both providers."""

    runtime: RuntimeLog | None
    manifest: WorkloadManifest | None = None

    def measure_workload(self, manifest: WorkloadManifest) -> None:
        """Extend RTMR3 with ``manifest`` (before the instance's E2EE key exists)."""
        if self.runtime is None:
            raise AttestationError("this TD exposes no runtime RTMR interface (needs Linux >= "
                                   "6.16 tsm-mr sysfs or the TDX_CMD_EXTEND_RTMR ioctl)")
        self.runtime.measure_workload(manifest)
        self.manifest = manifest

    def _workload_wire(self) -> dict[str, object]:
        return {"event_log": self.runtime.to_wire() if self.runtime is not None else [],
                "workload_manifest": self.manifest.to_dict() if self.manifest else None}


class HardwareProvider(_Workload):
    """A real TDX quote plus (optionally) NVIDIA GPU evidence and the RTMR3 log."""

    def __init__(self, tdx: TdxQuoter, gpu: NvidiaGpuProvider | None = None,
                 runtime: RuntimeLog | None = None) -> None:
        self.tdx, self.gpu, self.runtime = tdx, gpu, runtime

    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str,
                receipt_pubkey: bytes | None = None) -> Evidence:
        quote = self.tdx.quote(build_report_data(nonce, e2e_pubkey, hotkey_ss58, receipt_pubkey))
        gpus = self.gpu.collect(nonce) if self.gpu else []
        return Evidence(quote, gpus, simulated=False, **self._workload_wire())  # type: ignore[arg-type]


class SimulatedProvider(_Workload):
    """INSECURE development evidence: real layouts, publicly known signing keys.

    RTMR3 is a simulated register (zeros at start) moved only by ``measure_workload``.
    """

    def __init__(self, *, debug: bool = False, gpu_count: int = 8, gpu_model: str = "H100",
                 bind_hotkey: str | None = None, seed: bytes | None = None,
                 gpu_devtools: bool = False) -> None:
        self.debug, self.bind_hotkey, self.gpu_devtools = debug, bind_hotkey, gpu_devtools
        self.device = SimulatedDevice(seed if seed is not None else os.urandom(32),
                                      gpu_model=gpu_model, gpu_count=gpu_count)
        self.rtmr = SimulatedRtmr()
        self.runtime = RuntimeLog(self.rtmr)
        log.warning("SIMULATED attestation provider in use: evidence is forgeable, "
                    "nothing is confidential (development only)")

    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str,
                receipt_pubkey: bytes | None = None) -> Evidence:
        report_data = build_report_data(nonce, e2e_pubkey, self.bind_hotkey or hotkey_ss58,
                                        receipt_pubkey)
        quote = self.device.quote(report_data, debug=self.debug, rtmr3=self.rtmr.read(3))
        return Evidence(quote, self.device.gpu_evidence(nonce, devtools=self.gpu_devtools),
                        simulated=True,
                        **self._workload_wire())  # type: ignore[arg-type]


def _tdx_quoter(tsm_dir: str | Path, device: str | Path, qgs_address: str | None,
                qgs_timeout: float) -> TdxQuoter:
    if Path(tsm_dir).is_dir():
        return TdxConfigfsProvider(tsm_dir)
    if Path(device).exists():
        address = qgs_address or os.environ.get(QGS_ADDRESS_ENV) or DEFAULT_QGS_ADDRESS
        log.info("configfs-tsm absent: TDX quotes via %s and the QGS at %s", device, address)
        return TdxGuestDeviceProvider(device, QgsClient(address, timeout=qgs_timeout))
    raise AttestationError(
        f"no TDX quote interface: neither configfs-tsm ({tsm_dir}) nor the TDX guest device "
        f"({device}) exists; is this a TDX guest? for development only, run the miner with "
        "--tee simulated (forgeable evidence)")


def make_provider(kind: str, **opts: Any) -> EvidenceProvider:
    """``"tdx"`` or ``"simulated"`` (opts: those of :class:`SimulatedProvider`).

    ``"tdx"`` opts: ``gpus: bool = True``, ``tsm_dir``, ``tdx_device``,
    ``qgs_address`` (default ``$CHUTES_QGS_ADDRESS`` or ``vsock:2:4050``),
    ``qgs_timeout``, ``rtmr_sysfs`` and ``event_log`` (the RTMR3 log file). It uses
    configfs-tsm when present, else ``/dev/tdx_guest`` with the host QGS; RTMR3 is
    extended through tsm-mr sysfs when present, else the ``/dev/tdx_guest`` ioctl.
    Fails at startup, not per challenge.
    """
    if kind == "simulated":
        return SimulatedProvider(**opts)
    if kind == "tdx":
        gpus = opts.pop("gpus", True)
        device = opts.pop("tdx_device", LEGACY_TDX_DEVICE)
        tdx = _tdx_quoter(opts.pop("tsm_dir", TSM_REPORT_DIR), device,
                          opts.pop("qgs_address", None), float(opts.pop("qgs_timeout", 30.0)))
        sysfs, event_log = opts.pop("rtmr_sysfs", SYSFS_MEASUREMENTS), opts.pop("event_log", None)
        if opts:
            raise AttestationError(f"unknown TDX provider options: {sorted(opts)}")
        try:
            runtime: RuntimeLog | None = RuntimeLog(rtmr_device(sysfs, device),
                                                    event_log or DEFAULT_EVENT_LOG)
        except AttestationError as exc:
            log.warning("%s: the workload cannot be measured into RTMR3", exc)
            runtime = None
        return HardwareProvider(tdx, NvidiaGpuProvider() if gpus else None, runtime)
    raise AttestationError(f"unknown evidence provider kind {kind!r} (use 'tdx' or 'simulated')")
