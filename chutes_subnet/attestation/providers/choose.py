"""Pick a miner's evidence provider by name: ``"tdx"`` (real hardware) or ``"simulated"``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.errors import AttestationError

from .configfs_tsm import TSM_REPORT_DIR, TdxConfigfsProvider
from .evidence_provider import EvidenceProvider, HardwareProvider, TdxQuoter
from .nvidia import NvidiaGpuProvider
from .qgs import DEFAULT_QGS_ADDRESS, QgsClient
from .rtmr import DEFAULT_EVENT_LOG, SYSFS_MEASUREMENTS, RuntimeLog, rtmr_device
from .tdx_guest import LEGACY_TDX_DEVICE, TdxGuestDeviceProvider

__all__ = ["QGS_ADDRESS_ENV", "make_provider"]

log = logging.getLogger(__name__)
#: Environment variable naming the QGS address when none is passed to make_provider.
QGS_ADDRESS_ENV = "CHUTES_QGS_ADDRESS"


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
