"""Frozen records of what a validator observed: per instance, per round.

A uid fronting several instances (``GET /fleet``) has one :class:`MinerResult` per
instance it listed, each with its ``instance_url``; :meth:`RoundReport.results_for`
gives them all, :meth:`RoundReport.result_for` the uid's representative (its first
passing instance, else its first).

A failed evaluation always carries a ``reason``: a stable code of the form
``kind`` or ``kind:detail`` (e.g. ``attestation:debug_td``, ``timeout``,
``wrong_output``). ``kind`` is one of :data:`REASON_KINDS`; scoring and metrics key on
it. ``detail_text`` is one sentence for operators and never holds plaintext or keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from chutes_subnet.chain import WeightsResult

__all__ = [
    "REASON_KINDS",
    "reason_kind",
    "AttestationSummary",
    "MinerResult",
    "RoundReport",
    "representative",
]

#: Failure kinds, in the order an evaluation can fail.
REASON_KINDS = (
    "no_axon",        # the hotkey published no endpoint
    "fleet",          # the hotkey's instance list (GET /fleet) was refused (fleet:<code>),
                      # or an instance was refused as a duplicate within its own fleet
    "unreachable",    # connection refused / reset / DNS
    "timeout",        # no complete answer within the per-request timeout
    "bad_response",   # HTTP error, malformed message, failed decryption or stream integrity
    "attestation",    # evidence rejected by the verifier (detail = first verdict reason code)
    "wrong_output",   # answer differs from the local recomputation or the canary repeat,
                      # usage disagrees with the validator's count (wrong_output:usage),
                      # tokens unlikely under the reference model (wrong_output:logprob)
    "unverified",     # the validator holds no reference for the model the miner serves
)


def reason_kind(reason: str | None) -> str | None:
    """The kind part of a reason code (``"attestation:debug_td"`` -> ``"attestation"``)."""
    if reason is None:
        return None
    return reason.split(":", 1)[0]


@dataclass(frozen=True)
class AttestationSummary:
    """What the validator keeps about one verified (or rejected) challenge answer."""

    ok: bool
    instance_id: str | None
    chute_id: str | None
    model: str | None
    e2e_pubkey: str | None  #: base64; public by design
    simulated: bool
    tcb_status: str | None
    profile: str | None
    gpu_model: str | None
    gpu_count: int
    reason_codes: tuple[str, ...]
    verified_at: float
    expires_at: float
    #: hardware the evidence proved (attestation.hardware): counted once per round
    platform_id: str | None = None
    gpu_ids: tuple[str, ...] = ()
    #: SHA-384 of the workload manifest measured into RTMR3
    manifest_sha384: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (persisted per miner as its evidence summary)."""
        out = asdict(self)
        out["reason_codes"] = list(self.reason_codes)
        out["gpu_ids"] = list(self.gpu_ids)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttestationSummary:
        data = dict(d)
        data["reason_codes"] = tuple(data.get("reason_codes", ()))
        data["gpu_ids"] = tuple(data.get("gpu_ids", ()))
        return cls(**data)


@dataclass(frozen=True)
class MinerResult:
    """One miner's evaluation in one round."""

    uid: int
    hotkey: str
    coldkey: str
    axon: str | None
    attested: bool
    reason: str | None = None
    detail_text: str = ""
    attestation: AttestationSummary | None = None
    attestation_cached: bool = False
    requests: int = 0
    successes: int = 0
    verified: int = 0  #: answers checked exactly (embedded) or by canary (upstream)
    tokens_per_s: float = 0.0  #: median decode throughput over successful requests
    ttft_s: float | None = None  #: median time to first token
    completion_tokens: int = 0  #: counted by the validator with the chute's tokenizer
    duration_s: float = 0.0
    #: the chute the attested instance serves (scores compare within it)
    chute_id: str | None = None
    #: the instance evaluated (base URL from the uid's fleet list; None: the uid as a
    #: whole failed before any instance, e.g. no axon or a refused list)
    instance_url: str | None = None

    @property
    def success_rate(self) -> float:
        return self.successes / self.requests if self.requests else 0.0

    @property
    def ok(self) -> bool:
        """Attested and no failure recorded."""
        return self.attested and self.reason is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["attestation"] = self.attestation.to_dict() if self.attestation else None
        out["success_rate"] = self.success_rate
        return out


def representative(results: tuple[MinerResult, ...] | list[MinerResult]) -> MinerResult | None:
    """The result that stands for a uid: its first passing instance, else its first."""
    return next((r for r in results if r.ok), results[0] if results else None)


@dataclass(frozen=True)
class RoundReport:
    """Outcome of :meth:`Validator.run_round`."""

    round_index: int
    block: int
    started_at: float
    duration_s: float
    results: tuple[MinerResult, ...]
    round_scores: dict[int, float]
    ema: dict[int, float]
    weights: dict[int, float]
    weights_result: WeightsResult | None = None
    notes: tuple[str, ...] = field(default=())

    def results_for(self, uid: int) -> tuple[MinerResult, ...]:
        """This round's results of ``uid``, one per instance evaluated."""
        return tuple(r for r in self.results if r.uid == uid)

    def result_for(self, uid: int) -> MinerResult | None:
        """``uid``'s representative result: its first passing instance, else its first
        (None if it was not evaluated)."""
        return representative(self.results_for(uid))
