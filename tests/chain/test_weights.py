"""plan_weights / quantize_weights against the SDK's own conforming pipeline."""

from __future__ import annotations

import math

import pytest
from bittensor.intents import normalize
from bittensor.intents.weights import _conform, _Preflight, clip_to_max_weight
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.chain import plan_weights, quantize_weights

scores_st = st.dictionaries(
    st.integers(min_value=0, max_value=4095),
    st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)),
    min_size=0,
    max_size=64,
)
limit_st = st.one_of(st.none(), st.floats(min_value=0.01, max_value=1.0))


def _sdk_conform(scores: dict[int, float], limit: float | None) -> dict[int, int]:
    """What SetWeights would submit for ``scores`` (uid 65535 as the signer: no self-weight)."""
    items = sorted(scores.items())
    u16 = 65535 if limit is None else max(1, round(limit * 65535))
    preflight = _Preflight(uid=65535, commit_reveal=False, min_allowed_weights=0,
                           max_weight_limit=u16)
    uids, values = _conform([u for u, _ in items], [w for _, w in items], preflight, 1)
    return dict(zip(uids, values, strict=True))


@settings(max_examples=300, deadline=None)
@given(scores_st, limit_st)
def test_plan_matches_sdk_clip_and_normalize(scores, limit):
    plan = plan_weights(scores, max_weight=limit)
    items = sorted(scores.items())
    if not items or sum(w for _, w in items) <= 0:
        assert plan == {}
        return
    values = [w for _, w in items]
    if limit is not None and limit < 1.0:
        expected = clip_to_max_weight(values, limit)
    else:
        total = math.fsum(values)
        expected = [w / total for w in values]
    want = {uid: w for (uid, _), w in zip(items, expected, strict=True) if w > 0}
    assert plan == want  # bit-for-bit: same functions, same order
    assert math.isclose(sum(plan.values()), 1.0, rel_tol=1e-9)
    assert all(w > 0 for w in plan.values())


@settings(max_examples=300, deadline=None)
@given(scores_st)
def test_submitting_the_plan_equals_submitting_the_scores(scores):
    """Without a limit to enforce, the chain stores the same for the plan as for raw scores."""
    plan = plan_weights(scores)
    if not plan:
        return
    from_scores = _sdk_conform(scores, None)
    from_plan = _sdk_conform(plan, None)
    for u in from_plan.keys() | from_scores.keys():  # one u16 step; 1 vs dropped 0 allowed
        assert abs(from_plan.get(u, 0) - from_scores.get(u, 0)) <= 1, u


@settings(max_examples=300, deadline=None)
@given(scores_st, limit_st)
def test_the_chain_never_weights_a_zero_scored_uid(scores, limit):
    """Under a max-weight limit the SDK may spread weight onto every uid it is given,
    zero-scored ones included (found by hypothesis: {0: 0.0, 1: 1.0} at limit 0.5
    stores 65535 for both). The plan leaves zero-scored uids out, so a miner that
    failed attestation or correctness gets nothing whatever the subnet's limit.
    """
    if limit is not None:  # the chain's u16 limit / 65535
        limit = max(1, round(limit * 65535)) / 65535
    plan = plan_weights(scores)
    stored = _sdk_conform(plan, limit) if plan else {}
    assert {u for u, w in stored.items() if w > 0} <= {u for u, w in scores.items() if w > 0}


def test_clipping_twice_is_not_clipping_once():
    """Why the validator leaves clipping to the SDK (case found by hypothesis in CI)."""
    scores = {0: 668744.0, 1: 0.125, 2: 2.0, 3: 2.0, 4: 2.0}
    limit = round(0.24414435034714274 * 65535) / 65535
    once = _sdk_conform(scores, limit)
    twice = _sdk_conform(plan_weights(scores, max_weight=limit), limit)
    assert once[1] != twice[1]
    assert once == _sdk_conform(plan_weights(scores), limit)


@settings(max_examples=200, deadline=None)
@given(scores_st)
def test_quantize_is_the_sdk_normalize(scores):
    plan = plan_weights(scores)
    uids, values = normalize(sorted(plan), [plan[u] for u in sorted(plan)])
    assert quantize_weights(plan) == dict(zip(uids, values, strict=True))
    if plan:
        assert max(quantize_weights(plan).values()) == 65535


def test_known_vectors():
    assert plan_weights({}) == {}
    assert plan_weights({3: 0.0, 1: 0.0}) == {}
    assert plan_weights({2: 1.0, 1: 3.0, 9: 0.0}) == {1: 0.75, 2: 0.25}
    clipped = plan_weights({0: 10.0, 1: 1.0, 2: 1.0}, max_weight=0.5)
    assert max(clipped.values()) == pytest.approx(0.5, abs=1e-6)
    assert sum(clipped.values()) == pytest.approx(1.0)
    assert plan_weights({0: 5.0, 1: 1.0}, max_weight=0.25) == {0: 0.5, 1: 0.5}  # 2*0.25 <= 1
    assert quantize_weights({1: 0.75, 2: 0.25}) == {1: 65535, 2: 21845}


@pytest.mark.parametrize(
    "scores, limit",
    [({1: -1.0}, None), ({1: float("nan")}, None), ({1: float("inf")}, None),
     ({-1: 1.0}, None), ({70000: 1.0}, None), ({1: 1.0}, 0.0), ({1: 1.0}, 1.5)],
)
def test_bad_input_is_rejected(scores, limit):
    with pytest.raises(ValueError):
        plan_weights(scores, max_weight=limit)
