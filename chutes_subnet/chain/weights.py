"""Pure weight planning: scores -> the weight vector a validator submits.

The chain conforms every submission the same way (bittensor 11's ``SetWeights``):
clip so no weight exceeds the subnet's ``max_weight_limit`` share, normalize, then
max-upscale and quantize to u16. :func:`plan_weights` performs the float part of that
pipeline with the SDK's own functions, so what a validator logs, tests and simulates
is exactly what the chain will store; :func:`quantize_weights` shows the u16 values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from bittensor.intents import normalize
from bittensor.intents.weights import clip_to_max_weight

__all__ = ["plan_weights", "quantize_weights", "U16_MAX"]

U16_MAX = 65535


def _checked_items(scores: Mapping[int, float]) -> list[tuple[int, float]]:
    items: list[tuple[int, float]] = []
    for uid, score in scores.items():
        if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid <= U16_MAX:
            raise ValueError("uids must be integers in 0..65535")
        value = float(score)
        if not math.isfinite(value) or value < 0:
            raise ValueError("scores must be finite and non-negative")
        items.append((uid, value))
    return sorted(items)


def plan_weights(
    scores: Mapping[int, float], *, max_weight: float | None = None
) -> dict[int, float]:
    """Turn raw per-uid scores into normalized weights that sum to 1.

    Steps, matching the chain's conforming of a ``SetWeights`` submission:

    1. reject negative or non-finite scores and uids outside u16 (``ValueError``);
    2. all-zero (or empty) scores give ``{}``: there is nothing to set;
    3. with ``max_weight`` (a fraction in (0, 1], the subnet's
       ``max_weight_limit / 65535``) below 1, redistribute mass with
       ``bittensor.intents.clip_to_max_weight`` so no weight exceeds it
       (if ``len * max_weight <= 1`` the uniform vector is the only answer);
       otherwise divide by the sum;
    4. drop uids whose weight is 0.

    Pure and deterministic; the result is sorted by uid.
    """
    if max_weight is not None and not (0.0 < max_weight <= 1.0 and math.isfinite(max_weight)):
        raise ValueError("max_weight must be a fraction in (0, 1]")
    items = _checked_items(scores)
    total = math.fsum(value for _, value in items)
    if not items or total <= 0:
        return {}
    uids = [uid for uid, _ in items]
    values = [value for _, value in items]
    if max_weight is not None and max_weight < 1.0:
        planned = clip_to_max_weight(values, max_weight)
    else:
        planned = [value / total for value in values]
    return {uid: weight for uid, weight in zip(uids, planned, strict=True) if weight > 0}


def quantize_weights(weights: Mapping[int, float]) -> dict[int, int]:
    """The u16 values the chain stores for ``weights`` (max-upscaled, zeros dropped).

    Delegates to ``bittensor.intents.normalize``; raises ``ValueError`` on bad input.
    """
    items = _checked_items(weights)
    try:
        uids, values = normalize([uid for uid, _ in items], [value for _, value in items])
    except Exception as exc:  # the SDK raises its own BittensorError on bad input
        raise ValueError(str(exc)) from exc
    return dict(zip(uids, values, strict=True))
