"""What a miner-side evidence provider is, and the one backed by real hardware.

:class:`EvidenceProvider` is what the miner calls per challenge. Every provider builds
``report_data`` with :func:`~chutes_subnet.attestation.verify.binding.build_report_data`
so the binding is identical everywhere. ``collect`` is synchronous (the miner runs it
in a thread). ``measure_workload(manifest)`` (:class:`MeasuredWorkload`) extends RTMR3
with the workload event once, at instance start, before the E2EE key exists
(:mod:`.rtmr`); ``collect`` then returns the RTMR3 event log and the manifest next to
the quote. :class:`HardwareProvider` combines a TDX quoter (:mod:`.configfs_tsm` or
:mod:`.tdx_guest`) with NVIDIA GPU evidence (:mod:`.nvidia`); :mod:`.choose` picks one
by name.
"""

from __future__ import annotations

from typing import Protocol

from chutes_subnet.attestation.verify.binding import build_report_data
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.manifest import WorkloadManifest
from chutes_subnet.errors import AttestationError

from .nvidia import NvidiaGpuProvider
from .rtmr import RuntimeLog

__all__ = ["EvidenceProvider", "HardwareProvider", "MeasuredWorkload", "TdxQuoter"]


class EvidenceProvider(Protocol):
    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str,
                receipt_pubkey: bytes | None = None) -> Evidence:
        """Evidence bound to (nonce, e2e_pubkey, hotkey_ss58[, receipt_pubkey]): report_data
        layout v2 with a receipt key, v1 without (:mod:`chutes_subnet.attestation.verify.binding`)."""
        ...


class TdxQuoter(Protocol):
    def quote(self, report_data: bytes) -> bytes:
        """A TDX quote over ``report_data`` (64 bytes)."""
        ...


class MeasuredWorkload:
    """The measured manifest and RTMR3 log every provider returns next to its quote."""

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


class HardwareProvider(MeasuredWorkload):
    """A real TDX quote plus (optionally) NVIDIA GPU evidence and the RTMR3 log."""

    def __init__(self, tdx: TdxQuoter, gpu: NvidiaGpuProvider | None = None,
                 runtime: RuntimeLog | None = None) -> None:
        self.tdx, self.gpu, self.runtime = tdx, gpu, runtime

    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str,
                receipt_pubkey: bytes | None = None) -> Evidence:
        quote = self.tdx.quote(build_report_data(nonce, e2e_pubkey, hotkey_ss58, receipt_pubkey))
        gpus = self.gpu.collect(nonce) if self.gpu else []
        return Evidence(quote, gpus, simulated=False, **self._workload_wire())  # type: ignore[arg-type]
