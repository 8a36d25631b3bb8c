"""Attestation: the trust anchor of chutes-subnet.

Validator side: :class:`Verifier` (TDX quote via DCAP + NVIDIA GPU evidence + operator
:class:`Policy` + report_data binding) returning a frozen :class:`Verdict`, fed by a
:class:`CollateralSource` and guarded by a :class:`ChallengeBook`. Miner side:
:func:`make_provider` returns an :class:`EvidenceProvider` (real TDX/NVIDIA hardware,
or the INSECURE simulated provider for development). See ``docs/attestation.md``.
"""

from __future__ import annotations

from .binding import build_report_data
from .challenges import ChallengeBook
from .collateral import CollateralSource, PccsCollateralSource, StaticCollateralSource
from .dcap import collateral_from_json
from .evidence import Evidence, EvidenceFormatError
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
from .simulated import measure_simulated_profile
from .verifier import Verifier

__all__ = [
    "build_report_data",
    "ChallengeBook",
    "CollateralSource",
    "PccsCollateralSource",
    "StaticCollateralSource",
    "collateral_from_json",
    "Evidence",
    "EvidenceFormatError",
    "NVIDIA_OCSP_URL",
    "GpuOnlineChecker",
    "EvidenceFacts",
    "MeasurementProfile",
    "Policy",
    "EvidenceProvider",
    "HardwareProvider",
    "NvidiaGpuProvider",
    "SimulatedProvider",
    "TdxConfigfsProvider",
    "TdxGuestDeviceProvider",
    "QgsClient",
    "QgsError",
    "make_provider",
    "Measurements",
    "TdxQuote",
    "parse_quote",
    "Reason",
    "ReasonCode",
    "Verdict",
    "measure_simulated_profile",
    "Verifier",
]
