"""Pure scoring: round results -> round scores -> EMA -> sybil-deduplicated scores.

Round score of a miner (all terms in [0, 1]; see docs/validator.md)::

    0                                              unless attested and no failure reason
    bench   = success_rate ** e * (w * tps / best_tps + (1 - w) * best_ttft / ttft)
    inst    = (1 - o) * bench + o * organic / best_organic      (o = 0 without a source)
    round   = sum of inst over the uid's instances              (one, unless a fleet)

``best_*`` are taken over the instances of the same chute (same model) that passed this
round, so scores are relative to the current competition serving the same model. The EMA then smooths rounds; a new hotkey at a uid
starts from 0, and failures whose kind is in ``ScoringConfig.reset_on`` (untrusted
hardware, wrong answers) wipe the miner's history. Only the best hotkey of each
coldkey keeps its score when weights are planned.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from chutes_subnet.chain import plan_weights

from .config import ScoringConfig
from .results import MinerResult, reason_kind

__all__ = [
    "ScoreEntry",
    "score_round",
    "instance_scores",
    "sum_by_uid",
    "reset_uids",
    "update_ema",
    "dedupe_by_coldkey",
    "weights_from_scores",
]


@dataclass(frozen=True)
class ScoreEntry:
    """The persisted EMA of one uid, tied to the hotkey that earned it."""

    hotkey: str
    coldkey: str
    ema: float


def _finite_nonneg(value: object) -> float:
    """A non-negative finite float, or 0.0 for anything else (huge ints, NaN, junk):
    inputs may carry miner-controlled numbers and must never abort a round."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _chute_bests(passed: list[MinerResult], organic: Mapping[int, float] | None
                 ) -> dict[str | None, tuple[float, float, float]]:
    """``chute -> (best_tps, best_ttft, best_organic)`` over the miners that passed."""
    groups: dict[str | None, list[MinerResult]] = {}
    for r in passed:
        groups.setdefault(r.chute_id, []).append(r)
    bests = {}
    for chute, members in groups.items():
        tps = max((_finite_nonneg(r.tokens_per_s) for r in members), default=0.0)
        ttft = min((t for t in (_finite_nonneg(r.ttft_s) for r in members) if t > 0),
                   default=0.0)
        org = max((_finite_nonneg(organic.get(r.uid, 0.0)) for r in members),
                  default=0.0) if organic is not None else 0.0
        bests[chute] = (tps, ttft, org)
    return bests


def instance_scores(
    results: Sequence[MinerResult],
    config: ScoringConfig,
    organic: Mapping[int, float] | None = None,
) -> list[float]:
    """The round score in [0, 1] of every result (one per instance), aligned with ``results``.

    Throughput, TTFT and organic traffic are compared within a chute only (the
    ``best_*`` of the instance's own chute), so a fast small model never sets the bar
    for a big one. Organic traffic is counted per uid: each passing instance of a uid
    is credited an equal share of it. Every input is coerced by ``_finite_nonneg``: no
    value can raise.
    """
    passed = [r for r in results if r.ok and r.successes > 0]
    use_organic = organic is not None and config.organic_weight > 0
    shares: dict[int, int] = {}
    for r in passed:
        shares[r.uid] = shares.get(r.uid, 0) + 1
    per_instance = ({uid: _finite_nonneg(organic.get(uid, 0.0)) / n for uid, n in shares.items()}
                    if use_organic and organic is not None else None)
    bests = _chute_bests(passed, per_instance)
    w = config.throughput_weight
    scores: list[float] = []
    for r in results:
        if not (r.ok and r.successes > 0):
            scores.append(0.0)
            continue
        best_tps, best_ttft, best_organic = bests[r.chute_id]
        tps, ttft = _finite_nonneg(r.tokens_per_s), _finite_nonneg(r.ttft_s)
        tps_term = tps / best_tps if best_tps > 0 else 0.0
        ttft_term = best_ttft / ttft if ttft > 0 and best_ttft > 0 else 0.0
        quality = w * tps_term + (1.0 - w) * ttft_term
        bench = (r.success_rate ** config.success_exponent) * quality
        if per_instance is not None:
            org = per_instance.get(r.uid, 0.0)
            org_term = org / best_organic if best_organic > 0 else 0.0
            bench = (1.0 - config.organic_weight) * bench + config.organic_weight * org_term
        scores.append(min(1.0, max(0.0, bench)))
    return scores


def sum_by_uid(results: Sequence[MinerResult], scores: Sequence[float]) -> dict[int, float]:
    """Per uid, the sum of its instances' scores (every uid in ``results`` appears)."""
    out: dict[int, float] = {}
    for r, score in zip(results, scores, strict=True):
        out[r.uid] = out.get(r.uid, 0.0) + _finite_nonneg(score)
    return out


def score_round(
    results: Iterable[MinerResult],
    config: ScoringConfig,
    organic: Mapping[int, float] | None = None,
) -> dict[int, float]:
    """Score every uid of one round: the sum of its instances' :func:`instance_scores`
    (uids whose instances all failed map to 0.0). A single-instance uid scores in
    [0, 1]; a fleet of n instances in [0, n]."""
    results = list(results)
    return sum_by_uid(results, instance_scores(results, config, organic))


def reset_uids(results: Iterable[MinerResult], config: ScoringConfig) -> set[int]:
    """Uids whose failure kind wipes their EMA (``config.reset_on``)."""
    return {r.uid for r in results if reason_kind(r.reason) in config.reset_on}


def update_ema(
    prev: Mapping[int, ScoreEntry],
    round_scores: Mapping[int, float],
    *,
    alpha: float,
    neurons: Mapping[int, tuple[str, str]],
    resets: Collection[int] = (),
    max_score: float = 1.0,
) -> dict[int, ScoreEntry]:
    """Fold one round into the EMA.

    ``neurons`` maps every registered uid to ``(hotkey, coldkey)`` at this round.
    Uids no longer registered are dropped; a uid whose hotkey changed starts from 0;
    uids in ``resets`` start from 0; uids not scored this round keep their EMA. Round
    scores are clipped to [0, ``max_score``] (a fleet's sum may exceed 1).
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError("alpha must be in (0, 1]")
    out: dict[int, ScoreEntry] = {}
    for uid, (hotkey, coldkey) in neurons.items():
        old = prev.get(uid)
        base = old.ema if old is not None and old.hotkey == hotkey else 0.0
        if uid in resets:
            base = 0.0
        if uid in round_scores:
            score = min(max_score, _finite_nonneg(round_scores[uid]))
            value = alpha * score + (1.0 - alpha) * base
        elif old is None or old.hotkey != hotkey:
            continue
        else:
            value = base
        out[uid] = ScoreEntry(hotkey, coldkey, value)
    return out


def dedupe_by_coldkey(scores: Mapping[int, float], coldkeys: Mapping[int, str]) -> dict[int, float]:
    """Keep only the best-scoring uid per coldkey (ties: lowest uid); others get 0."""
    best: dict[str, int] = {}
    for uid in sorted(scores):
        owner = coldkeys.get(uid, f"uid:{uid}")
        holder = best.get(owner)
        if holder is None or scores[uid] > scores[holder]:
            best[owner] = uid
    keep = set(best.values())
    return {uid: (float(scores[uid]) if uid in keep else 0.0) for uid in sorted(scores)}


def weights_from_scores(
    entries: Mapping[int, ScoreEntry], *, max_weight: float | None = None
) -> dict[int, float]:
    """The normalized weights to submit: dedupe by coldkey, then the SDK's clip/normalize."""
    scores = {uid: e.ema for uid, e in entries.items()}
    coldkeys = {uid: e.coldkey for uid, e in entries.items()}
    return plan_weights(dedupe_by_coldkey(scores, coldkeys), max_weight=max_weight)
