"""Pure scoring: round results -> round scores -> EMA -> sybil-deduplicated scores.

Round score of a miner (all terms in [0, 1]; see docs/validator.md)::

    0                                              unless attested and no failure reason
    bench   = success_rate ** e * (w * tps / best_tps + (1 - w) * best_ttft / ttft)
    round   = (1 - o) * bench + o * organic / best_organic      (o = 0 without a source)

``best_*`` are taken over the miners of the same chute (same model) that passed this
round, so scores are relative to the current competition serving the same model. The EMA then smooths rounds; a new hotkey at a uid
starts from 0, and failures whose kind is in ``ScoringConfig.reset_on`` (untrusted
hardware, wrong answers) wipe the miner's history. Only the best hotkey of each
coldkey keeps its score when weights are planned.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from chutes_subnet.chain import plan_weights

from .config import ScoringConfig
from .results import MinerResult, reason_kind

__all__ = [
    "ScoreEntry",
    "score_round",
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


def score_round(
    results: Iterable[MinerResult],
    config: ScoringConfig,
    organic: Mapping[int, float] | None = None,
) -> dict[int, float]:
    """Score every result of one round (uids of failed miners map to 0.0).

    Throughput, TTFT and organic traffic are compared within a chute only (the
    ``best_*`` of the miner's own chute), so a fast small model never sets the bar
    for a big one. Every input is coerced by ``_finite_nonneg``: no value can raise.
    """
    results = list(results)
    passed = [r for r in results if r.ok and r.successes > 0]
    use_organic = organic is not None and config.organic_weight > 0
    bests = _chute_bests(passed, organic if use_organic else None)
    passed_uids = {r.uid for r in passed}
    scores: dict[int, float] = {}
    w = config.throughput_weight
    for r in results:
        if r.uid not in passed_uids:
            scores[r.uid] = 0.0
            continue
        best_tps, best_ttft, best_organic = bests[r.chute_id]
        tps, ttft = _finite_nonneg(r.tokens_per_s), _finite_nonneg(r.ttft_s)
        tps_term = tps / best_tps if best_tps > 0 else 0.0
        ttft_term = best_ttft / ttft if ttft > 0 and best_ttft > 0 else 0.0
        quality = w * tps_term + (1.0 - w) * ttft_term
        bench = (r.success_rate ** config.success_exponent) * quality
        if use_organic and organic is not None:
            org = _finite_nonneg(organic.get(r.uid, 0.0))
            org_term = org / best_organic if best_organic > 0 else 0.0
            bench = (1.0 - config.organic_weight) * bench + config.organic_weight * org_term
        scores[r.uid] = min(1.0, max(0.0, bench))
    return scores


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
) -> dict[int, ScoreEntry]:
    """Fold one round into the EMA.

    ``neurons`` maps every registered uid to ``(hotkey, coldkey)`` at this round.
    Uids no longer registered are dropped; a uid whose hotkey changed starts from 0;
    uids in ``resets`` start from 0; uids not scored this round keep their EMA.
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
            score = min(1.0, max(0.0, float(round_scores[uid])))
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
