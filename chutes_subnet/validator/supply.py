"""Chutes on the validator: serve registered chutes only, reward under-supplied ones.

* :func:`check_served_chute`: with a chute registry, an instance of a chute nobody
  deployed (a miner naming a model of its choosing) or of a retired chute fails its
  evaluation (``attestation:unregistered_chute`` / ``attestation:retired_chute``), so
  it is neither scored nor published for routing; so does one whose *attested* GPUs
  (model and count, from the verified evidence) fall short of the chute's hardware
  requirement (``attestation:hardware_mismatch``; GPU memory is not in the evidence
  and is not checked).
* :func:`apply_supply`: each passing uid's round score is multiplied by its chute's
  supply multiplier (:func:`chutes_subnet.registry.demand.supply_multiplier`): serving
  what users ask for and others do not pays more; :func:`supply_multipliers` gives the
  same per instance (a fleet's instances may serve different chutes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from chutes_subnet.registry.chutes import Chute
from chutes_subnet.registry.demand import Target

from .failures import EvaluationFailure
from .results import AttestationSummary, MinerResult

__all__ = ["ChuteCatalog", "apply_supply", "check_served_chute", "supply_multipliers"]


class ChuteCatalog(Protocol):
    """Read access to the chute registry."""

    def get(self, chute_id: str) -> Chute | None: ...


def check_served_chute(catalog: ChuteCatalog, chute_id: str,
                       summary: AttestationSummary | None = None) -> None:
    """Raise :class:`EvaluationFailure` unless ``chute_id`` is deployed and live."""
    chute = catalog.get(chute_id)
    if chute is None:
        raise EvaluationFailure("attestation:unregistered_chute",
                                f"chute {chute_id} is not deployed in the chute registry",
                                summary)
    if chute.retired:
        raise EvaluationFailure("attestation:retired_chute",
                                f"chute {chute.name} is retired", summary)
    need = chute.spec.hardware
    if summary is not None and need.gpu_count > 0:
        have = summary.gpu_model or ""
        if summary.gpu_count < need.gpu_count or (
                need.gpu_model.lower() != "any" and need.gpu_model.lower() not in have.lower()):
            raise EvaluationFailure(
                "attestation:hardware_mismatch",
                f"chute {chute.name} needs {need.gpu_count} x {need.gpu_model}; the instance "
                f"attested {summary.gpu_count} x {have or 'no GPU'}", summary)


def supply_multipliers(results: Sequence[MinerResult],
                       targets: Mapping[str, Target]) -> list[float]:
    """The multiplier of the chute each passing result (instance) serves; 1.0 for the rest."""
    out = []
    for r in results:
        chute = r.attestation.chute_id if r.ok and r.attestation is not None else None
        target = targets.get(chute or "")
        out.append(target.multiplier if target is not None else 1.0)
    return out


def apply_supply(round_scores: Mapping[int, float], results: list[MinerResult],
                 targets: Mapping[str, Target]) -> dict[int, float]:
    """Round scores times the multiplier of the chute each passing uid serves."""
    chute_of = {r.uid: r.attestation.chute_id for r in results
                if r.ok and r.attestation is not None and r.attestation.chute_id}
    out = dict(round_scores)
    for uid, score in round_scores.items():
        target = targets.get(chute_of.get(uid, ""))
        if target is not None:
            out[uid] = score * target.multiplier
    return out
