"""Pure scoring: round scores, EMA, coldkey dedupe, weights (with hypothesis properties)."""

from __future__ import annotations

import math

import pytest
from bittensor.intents import normalize
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.chain import plan_weights
from chutes_subnet.validator import (
    MinerResult,
    ScoreEntry,
    ScoringConfig,
    dedupe_by_coldkey,
    reset_uids,
    score_round,
    update_ema,
    weights_from_scores,
)

CFG = ScoringConfig()


def ok(uid: int, tps: float = 100.0, ttft: float | None = 0.1, successes: int = 4,
       requests: int = 4) -> MinerResult:
    return MinerResult(uid, f"hk{uid}", f"ck{uid}", "127.0.0.1:1", True, requests=requests,
                       successes=successes, tokens_per_s=tps, ttft_s=ttft)


def failed(uid: int, reason: str, attested: bool = False) -> MinerResult:
    return MinerResult(uid, f"hk{uid}", f"ck{uid}", "127.0.0.1:1", attested, reason=reason)


def test_best_miner_scores_one_and_others_relative():
    scores = score_round([ok(0, tps=200, ttft=0.1), ok(1, tps=100, ttft=0.2)], CFG)
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(0.7 * 0.5 + 0.3 * 0.5)


def test_failures_score_zero_whatever_their_numbers():
    results = [ok(0), failed(1, "attestation:debug_td"), failed(2, "timeout", attested=True),
               MinerResult(3, "h", "c", "a", True, reason="wrong_output", requests=4,
                           successes=4, tokens_per_s=1e6, ttft_s=1e-6)]
    scores = score_round(results, CFG)
    assert scores == {0: pytest.approx(1.0), 1: 0.0, 2: 0.0, 3: 0.0}


def test_success_rate_is_penalized_quadratically():
    scores = score_round([ok(0), ok(1, successes=2)], CFG)
    assert scores[1] == pytest.approx(0.25)


def test_missing_ttft_loses_the_latency_share():
    scores = score_round([ok(0), ok(1, ttft=None)], CFG)
    assert scores[1] == pytest.approx(0.7)


def test_organic_component():
    cfg = ScoringConfig(organic_weight=0.5)
    scores = score_round([ok(0), ok(1)], cfg, organic={0: 1000.0, 1: 0.0})
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(0.5)
    assert score_round([ok(0), ok(1)], cfg, organic=None)[1] == pytest.approx(1.0)


def test_reset_uids_by_kind():
    results = [failed(1, "attestation:binding_mismatch"), failed(2, "timeout"),
               failed(3, "wrong_output", attested=True), ok(4)]
    assert reset_uids(results, CFG) == {1, 3}


def test_update_ema_rules():
    prev = {0: ScoreEntry("a", "c0", 0.5), 1: ScoreEntry("b", "c1", 0.5),
            2: ScoreEntry("c", "c2", 0.5), 3: ScoreEntry("d", "c3", 0.5)}
    neurons = {0: ("a", "c0"), 1: ("NEW", "c1"), 2: ("c", "c2"), 4: ("e", "c4")}
    out = update_ema(prev, {0: 1.0, 1: 1.0, 4: 1.0}, alpha=0.5, neurons=neurons)
    assert out[0].ema == pytest.approx(0.75)        # normal update
    assert out[1] == ScoreEntry("NEW", "c1", 0.5)    # new hotkey at the uid starts from 0
    assert out[2].ema == 0.5                         # not scored: kept
    assert 3 not in out                              # deregistered: dropped
    assert out[4].ema == pytest.approx(0.5)          # new uid
    reset = update_ema(prev, {0: 0.0}, alpha=0.5, neurons={0: ("a", "c0")}, resets={0})
    assert reset[0].ema == 0.0


def test_update_ema_rejects_bad_alpha():
    with pytest.raises(ValueError):
        update_ema({}, {}, alpha=0.0, neurons={})


def test_dedupe_keeps_best_per_coldkey():
    scores = {0: 0.2, 1: 0.9, 2: 0.9, 3: 0.5}
    coldkeys = {0: "x", 1: "x", 2: "y", 3: "y"}
    assert dedupe_by_coldkey(scores, coldkeys) == {0: 0.0, 1: 0.9, 2: 0.9, 3: 0.0}
    assert dedupe_by_coldkey({5: 0.3, 4: 0.3}, {5: "z", 4: "z"}) == {4: 0.3, 5: 0.0}


def test_weights_match_sdk_math():
    entries = {0: ScoreEntry("a", "x", 0.6), 1: ScoreEntry("b", "x", 0.3),
               2: ScoreEntry("c", "y", 0.2)}
    weights = weights_from_scores(entries)
    assert weights == plan_weights({0: 0.6, 1: 0.0, 2: 0.2})
    assert math.fsum(weights.values()) == pytest.approx(1.0)
    uids, values = normalize(list(weights), list(weights.values()))
    assert list(uids) == [0, 2] and max(values) == 65535
    assert weights_from_scores({}) == {}
    clipped = weights_from_scores({i: ScoreEntry(str(i), str(i), 1.0 + i) for i in range(5)},
                                  max_weight=0.3)
    assert max(clipped.values()) <= 0.3 + 1e-9


results_st = st.lists(
    st.tuples(st.floats(0, 1e5), st.one_of(st.none(), st.floats(1e-4, 60)),
              st.integers(0, 6), st.booleans()),
    min_size=1, max_size=12)


def _results(rows):
    out = []
    for uid, (tps, ttft, succ, good) in enumerate(rows):
        if good:
            out.append(ok(uid, tps=tps, ttft=ttft, successes=succ, requests=6))
        else:
            out.append(failed(uid, "attestation:debug_td"))
    return out


@settings(max_examples=200, deadline=None)
@given(results_st)
def test_round_scores_are_bounded_and_zero_for_failures(rows):
    results = _results(rows)
    scores = score_round(results, CFG)
    assert set(scores) == {r.uid for r in results}
    for r in results:
        assert 0.0 <= scores[r.uid] <= 1.0
        if not r.ok or r.successes == 0:
            assert scores[r.uid] == 0.0


@settings(max_examples=200, deadline=None)
@given(results_st, st.integers(0, 11), st.floats(1.0, 10.0))
def test_more_throughput_never_lowers_own_score(rows, pick, factor):
    results = _results(rows)
    target = results[pick % len(results)]
    faster = [MinerResult(**{**r.__dict__, "tokens_per_s": r.tokens_per_s * factor})
              if r.uid == target.uid else r for r in results]
    assert score_round(faster, CFG)[target.uid] >= score_round(results, CFG)[target.uid] - 1e-12


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, 30), st.floats(0, 1), max_size=20),
       st.dictionaries(st.integers(0, 30), st.floats(0, 1), max_size=20),
       st.floats(0.01, 1.0))
def test_ema_stays_in_unit_interval(prev_scores, round_scores, alpha):
    neurons = {u: (f"h{u}", f"c{u % 3}") for u in set(prev_scores) | set(round_scores)}
    prev = {u: ScoreEntry(f"h{u}", f"c{u % 3}", v) for u, v in prev_scores.items()}
    out = update_ema(prev, round_scores, alpha=alpha, neurons=neurons)
    assert set(out) == set(neurons)
    for u, e in out.items():
        assert 0.0 <= e.ema <= 1.0
        if u in round_scores:
            lo, hi = sorted((round_scores[u], prev_scores.get(u, 0.0)))
            assert lo - 1e-12 <= e.ema <= hi + 1e-12


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, 40), st.tuples(st.floats(0, 1), st.integers(0, 4)),
                       min_size=1, max_size=25))
def test_dedupe_one_winner_per_coldkey(data):
    scores = {u: s for u, (s, _) in data.items()}
    coldkeys = {u: f"c{c}" for u, (_, c) in data.items()}
    out = dedupe_by_coldkey(scores, coldkeys)
    assert set(out) == set(scores)
    for owner in set(coldkeys.values()):
        uids = [u for u in scores if coldkeys[u] == owner]
        assert all(out[u] in (0.0, scores[u]) for u in uids)
        assert max(out[u] for u in uids) == max(scores[u] for u in uids)
        assert sum(1 for u in uids if out[u] > 0) <= 1


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.integers(0, 255), st.floats(0, 1), max_size=40))
def test_weights_normalized_and_sdk_consistent(scores):
    entries = {u: ScoreEntry(f"h{u}", f"c{u}", v) for u, v in scores.items()}
    weights = weights_from_scores(entries)
    if not any(v > 0 for v in scores.values()):
        assert weights == {}
        return
    assert math.fsum(weights.values()) == pytest.approx(1.0)
    assert weights == plan_weights(scores)


def test_docs_worked_example_compares_within_a_chute():
    """The worked example of docs/validator.md ("Scoring"), number for number."""
    import dataclasses

    from chutes_subnet.validator.results import MinerResult

    rows = [MinerResult(1, "h1", "c1", "a", True, requests=4, successes=4, tokens_per_s=40,
                        ttft_s=0.5, chute_id="A"),
            MinerResult(2, "h2", "c2", "a", True, requests=4, successes=4, tokens_per_s=30,
                        ttft_s=0.4, chute_id="A"),
            MinerResult(3, "h3", "c3", "a", True, requests=4, successes=3, tokens_per_s=200,
                        ttft_s=0.1, chute_id="B")]
    assert score_round(rows, ScoringConfig()) == pytest.approx({1: 0.94, 2: 0.825, 3: 0.5625})
    mixed = [dataclasses.replace(r, chute_id=None) for r in rows]  # one pool: the old rule
    assert score_round(mixed, ScoringConfig()) == pytest.approx({1: 0.2, 2: 0.18, 3: 0.5625})
