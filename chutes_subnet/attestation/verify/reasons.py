"""Reason codes and the frozen :class:`Verdict` every attestation check returns.

Each rejection carries a machine-readable :class:`ReasonCode` (stable strings, safe
to log, export as metrics labels and send to a miner) and one human sentence. The
sentences never contain key material, nonces or report data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Reason", "ReasonCode", "Verdict"]


class ReasonCode(str, enum.Enum):
    """Why evidence was rejected. Values are stable wire/metric identifiers."""

    # input / shape
    MALFORMED_EVIDENCE = "malformed_evidence"
    NONCE_INVALID = "nonce_invalid"
    NONCE_UNKNOWN = "nonce_unknown_or_used"
    QUOTE_FORMAT = "quote_format"
    TEE_TYPE_NOT_TDX = "tee_type_not_tdx"
    GPU_EVIDENCE_FORMAT = "gpu_evidence_format"
    SIMULATED_TEE = "simulated_tee"
    # TDX crypto (DCAP)
    COLLATERAL_UNAVAILABLE = "collateral_unavailable"
    COLLATERAL_EXPIRED = "collateral_expired"
    QUOTE_CERT_CHAIN_INVALID = "quote_cert_chain_invalid"
    QUOTE_CERT_REVOKED = "quote_cert_revoked"
    QUOTE_SIGNATURE_INVALID = "quote_signature_invalid"
    QE_IDENTITY_INVALID = "qe_identity_invalid"
    TCB_LEVEL_NOT_FOUND = "tcb_level_not_found"
    DCAP_VERIFICATION_FAILED = "dcap_verification_failed"
    # GPU crypto
    GPU_CERT_CHAIN_INVALID = "gpu_cert_chain_invalid"
    GPU_CERT_REVOKED = "gpu_cert_revoked"
    GPU_SIGNATURE_INVALID = "gpu_signature_invalid"
    GPU_NONCE_MISMATCH = "gpu_nonce_mismatch"
    GPU_METADATA_MISMATCH = "gpu_metadata_mismatch"
    GPU_DUPLICATE = "gpu_duplicate"
    # policy
    TCB_STATUS_NOT_ACCEPTED = "tcb_status_not_accepted"
    ADVISORY_NOT_ACCEPTED = "advisory_not_accepted"
    DEBUG_TD = "debug_td"
    MEASUREMENT_NOT_ALLOWED = "measurement_not_allowed"
    GPU_COUNT_MISMATCH = "gpu_count_mismatch"
    GPU_MODEL_MISMATCH = "gpu_model_mismatch"
    # TD fields (policy data)
    MRSEAM_NOT_ALLOWED = "mrseam_not_allowed"
    TD_ATTRIBUTES_MISMATCH = "td_attributes_mismatch"
    XFAM_MISMATCH = "xfam_mismatch"
    MRCONFIGID_MISMATCH = "mrconfigid_mismatch"
    MROWNER_MISMATCH = "mrowner_mismatch"
    MROWNERCONFIG_MISMATCH = "mrownerconfig_mismatch"
    TEE_TCB_SVN_TOO_LOW = "tee_tcb_svn_too_low"
    # GPU policy
    GPU_CC_MODE_OFF = "gpu_cc_mode_off"
    GPU_DEVTOOLS_MODE = "gpu_devtools_mode"
    GPU_RIM_UNAVAILABLE = "gpu_rim_unavailable"
    GPU_RIM_MISMATCH = "gpu_rim_mismatch"
    GPU_REVOCATION_UNCHECKED = "gpu_revocation_unchecked"
    # workload identity (RTMR3 event log + manifest)
    EVENT_LOG_FORMAT = "event_log_format"
    EVENT_LOG_DIGEST_MISMATCH = "event_log_digest_mismatch"
    EVENT_LOG_REPLAY_MISMATCH = "event_log_replay_mismatch"
    WORKLOAD_EVENT_MISSING = "workload_event_missing"
    WORKLOAD_EVENT_DUPLICATE = "workload_event_duplicate"
    MANIFEST_FORMAT = "manifest_format"
    MANIFEST_NOT_MEASURED = "manifest_not_measured"
    MANIFEST_WRONG_CHUTE = "manifest_wrong_chute"
    MANIFEST_NOT_PUBLISHED = "manifest_not_published"
    # binding
    BINDING_MISMATCH = "binding_mismatch"
    # validator round (hardware counted once)
    PLATFORM_REUSED = "platform_reused"
    GPU_REUSED = "gpu_reused"


@dataclass(frozen=True)
class Reason:
    """One rejection: a stable code and a sentence for humans."""

    code: str
    message: str

    @classmethod
    def of(cls, code: ReasonCode, message: str) -> Reason:
        """Build a reason from an enum member (stores the plain string value)."""
        return cls(code.value, message)


@dataclass(frozen=True)
class Verdict:
    """Outcome of verifying one piece of evidence; ``ok`` iff ``reasons`` is empty."""

    ok: bool
    reasons: tuple[Reason, ...]
    tcb_status: str | None
    advisories: tuple[str, ...]
    simulated: bool
    gpu_count: int
    gpu_model: str | None
    profile: str | None
    notes: tuple[str, ...] = field(default=())
    #: SHA-384 (hex) of the verified workload manifest measured into RTMR3
    manifest_sha384: str | None = None
    #: hardware identities (hex digests) so a round can count each machine once:
    #: the TDX platform (PCK certificate key) and every verified GPU device key
    platform_id: str | None = None
    gpu_ids: tuple[str, ...] = field(default=())

    @property
    def reason_codes(self) -> tuple[str, ...]:
        """The reason codes alone, in the order the checks ran."""
        return tuple(r.code for r in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for logs, metrics and the validator's API)."""
        out: dict[str, Any] = {
            "ok": self.ok,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "tcb_status": self.tcb_status,
            "advisories": list(self.advisories),
            "simulated": self.simulated,
            "gpu_count": self.gpu_count,
            "gpu_model": self.gpu_model,
            "profile": self.profile,
            "notes": list(self.notes),
            "manifest_sha384": self.manifest_sha384,
            "platform_id": self.platform_id,
            "gpu_ids": list(self.gpu_ids),
        }
        if self.simulated:
            out["warning"] = "SIMULATED evidence: no TEE, no confidentiality; development only"
        return out
