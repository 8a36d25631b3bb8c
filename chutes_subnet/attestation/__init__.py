"""Attestation: the trust anchor of chutes-subnet.

Validator side: :class:`Verifier` (TDX quote via DCAP + NVIDIA GPU evidence + operator
:class:`Policy` + report_data binding) returning a frozen :class:`Verdict`, fed by a
:class:`CollateralSource` and guarded by a :class:`ChallengeBook`. Miner side:
:func:`make_provider` returns an :class:`EvidenceProvider` (real TDX/NVIDIA hardware,
or the INSECURE simulated provider for development), which also measures the
instance's :class:`WorkloadManifest` into RTMR3. See ``docs/attestation.md``.
"""

from __future__ import annotations

from .binding import build_report_data
from .challenges import ChallengeBook
from .collateral import CollateralSource, PccsCollateralSource, StaticCollateralSource
from .dcap import collateral_from_json
from .eventlog import RuntimeEvent, expected_rtmr3
from .evidence import Evidence, EvidenceFormatError
from .manifest import ManifestError, WorkloadManifest, load_manifest, parse_manifest
from .ocsp import NVIDIA_OCSP_URL, GpuOnlineChecker
from .policy import EvidenceFacts, MeasurementProfile, Policy
from .providers import (
    EvidenceProvider,
    HardwareProvider,
    NvidiaGpuProvider,
    SimulatedProvider,
    TdxConfigfsProvider,
    TdxGuestDeviceProvider,
    make_provider,
)
from .qgs import QgsClient, QgsError
from .quote import Measurements, TdxQuote, parse_quote
from .reasons import Reason, ReasonCode, Verdict
from .rtmr import RuntimeLog
from .simulated import measure_simulated_profile
from .td_policy import TdPolicy
from .verifier import Verifier
from .workload import ManifestSource, StaticManifestSource

__all__ = [
    "NVIDIA_OCSP_URL",
    "ChallengeBook",
    "CollateralSource",
    "Evidence",
    "EvidenceFacts",
    "EvidenceFormatError",
    "EvidenceProvider",
    "GpuOnlineChecker",
    "HardwareProvider",
    "ManifestError",
    "ManifestSource",
    "MeasurementProfile",
    "Measurements",
    "NvidiaGpuProvider",
    "PccsCollateralSource",
    "Policy",
    "QgsClient",
    "QgsError",
    "Reason",
    "ReasonCode",
    "RuntimeEvent",
    "RuntimeLog",
    "SimulatedProvider",
    "StaticCollateralSource",
    "StaticManifestSource",
    "TdPolicy",
    "TdxConfigfsProvider",
    "TdxGuestDeviceProvider",
    "TdxQuote",
    "Verdict",
    "Verifier",
    "WorkloadManifest",
    "build_report_data",
    "collateral_from_json",
    "expected_rtmr3",
    "load_manifest",
    "make_provider",
    "measure_simulated_profile",
    "parse_manifest",
    "parse_quote",
]
