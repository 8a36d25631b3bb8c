"""Logprob verification of a real model's answer: pure judgement over per-token scores.

The validator re-scores a sample of the miner's output tokens *teacher-forced* under
its own reference implementation of the chute's model (:mod:`.reference`): for each
sampled position ``i`` it feeds ``prompt + output[:i]`` and reads the reference's
distribution over the next token. Two numbers per sampled token:

* ``rank``: 1 + how many vocabulary entries the reference finds strictly more likely
  than the token the miner emitted (1 = the reference's own greedy choice);
* ``gap``: ``logprob(top-1) - logprob(miner token)`` in nats (0 for the top-1 token).

An answer passes when (:func:`judge`)

1. at most ``max_unlikely_share`` of the sampled tokens rank worse than ``max_rank``,
2. and the mean gap is at most ``max_mean_gap``.

Why these thresholds (defaults of :class:`LogprobPolicy`): the benchmark is greedy
(temperature 0), so an honest engine emits the reference's top-1 token except where
two candidates are within numerical noise of each other. Other kernels, batching,
bf16 vs fp32 or quantization move logits by ~1e-2..1e-1 nats, which can swap near-ties
into rank 2-3 with a gap of a few hundredths: rank 5 and a mean gap of 0.5 nats leave
an order of magnitude of headroom. Another model (other weights, a smaller model, the
embedded toy model under a big name) produces tokens that the reference ranks like
random draws from its vocabulary: ranks in the hundreds or thousands and gaps of
several nats, so even a 16-token sample fails with overwhelming probability
(``max_unlikely_share`` 0.25 tolerates a few re-tokenization or tie artefacts, never a
majority). Sampled answers (temperature > 0) would need a looser policy; the
benchmark does not send them. Thresholds are per chute (quantized or
mixture-of-experts deployments may need a larger ``max_rank``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LogprobPolicy", "LogprobVerdict", "TokenScore", "judge", "sample_positions"]


@dataclass(frozen=True)
class LogprobPolicy:
    """Thresholds of one chute (see module doc for why these defaults)."""

    #: output positions re-scored per verified answer (all of them if fewer)
    sample_tokens: int = 32
    #: a token ranked worse than this under the reference counts as unlikely
    max_rank: int = 5
    #: share of sampled tokens allowed to be unlikely
    max_unlikely_share: float = 0.25
    #: largest mean of ``logprob(top-1) - logprob(token)`` over the sample, in nats
    max_mean_gap: float = 0.5

    def __post_init__(self) -> None:
        if self.sample_tokens < 1 or self.max_rank < 1:
            raise ValueError("sample_tokens and max_rank must be >= 1")
        if not 0.0 <= self.max_unlikely_share < 1.0:
            raise ValueError("max_unlikely_share must be in [0, 1)")
        if not (math.isfinite(self.max_mean_gap) and self.max_mean_gap >= 0):
            raise ValueError("max_mean_gap must be a finite number >= 0")


@dataclass(frozen=True)
class TokenScore:
    """The reference's view of one emitted token."""

    rank: int
    gap: float


@dataclass(frozen=True)
class LogprobVerdict:
    """Outcome of :func:`judge`; ``reason`` is None, ``"rank"``, ``"mean_gap"`` or
    ``"empty"`` (nothing to score)."""

    ok: bool
    reason: str | None
    tokens: int
    unlikely_share: float
    mean_gap: float
    worst_rank: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def detail(self) -> str:
        """One operator-facing sentence (numbers only, never content)."""
        return (f"logprob check failed ({self.reason}): {self.tokens} tokens, "
                f"{self.unlikely_share:.0%} unlikely, mean gap {self.mean_gap:.2f} nats, "
                f"worst rank {self.worst_rank}")


def sample_positions(n_tokens: int, k: int, rng: random.Random) -> list[int]:
    """``min(k, n_tokens)`` distinct output positions, ascending."""
    if n_tokens <= 0:
        return []
    if k >= n_tokens:
        return list(range(n_tokens))
    return sorted(rng.sample(range(n_tokens), k))


def _gap(value: float) -> float:
    """A NaN gap (a reference that cannot score the token) counts as infinitely far."""
    return math.inf if math.isnan(value) else max(0.0, value)


def judge(scores: Sequence[TokenScore], policy: LogprobPolicy) -> LogprobVerdict:
    """Apply ``policy`` to the scored sample (see module doc)."""
    if not scores:
        return LogprobVerdict(False, "empty", 0, 0.0, 0.0, 0)
    n = len(scores)
    unlikely = sum(1 for s in scores if s.rank > policy.max_rank) / n
    mean_gap = sum(_gap(s.gap) for s in scores) / n
    worst = max(s.rank for s in scores)
    reason = None
    if unlikely > policy.max_unlikely_share:
        reason = "rank"
    elif not mean_gap <= policy.max_mean_gap:  # also catches NaN
        reason = "mean_gap"
    return LogprobVerdict(reason is None, reason, n, unlikely, mean_gap, worst)
