"""The INSECURE simulated evidence provider, for local development."""

from __future__ import annotations

import logging
import os

from chutes_subnet.attestation.providers.evidence_provider import (
    MeasuredWorkload,
)
from chutes_subnet.attestation.providers.rtmr import (
    RuntimeLog,
    SimulatedRtmr,
)
from chutes_subnet.attestation.verify.binding import build_report_data
from chutes_subnet.attestation.verify.evidence import Evidence

from .device import SimulatedDevice

__all__ = ["SimulatedProvider"]

log = logging.getLogger(__name__)


class SimulatedProvider(MeasuredWorkload):
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
