"""No number a miner (or its host) controls can abort a validator round.

Regression: a 401-digit ``completion_tokens`` in the plaintext usage header was summed
by the gateway, turned into a float by the organic source and compared by scoring:
``OverflowError`` escaped ``run_round``, so nothing was committed and no weights set.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chutes_subnet.errors import UsageError
from chutes_subnet.validator import (
    BenchmarkConfig,
    ScoringConfig,
    Validator,
    ValidatorConfig,
    ValidatorState,
)
from chutes_subnet.validator.organic import GatewayOrganicSource
from chutes_subnet.validator.results import MinerResult
from chutes_subnet.validator.scoring import score_round
from chutes_subnet.wire.headers import MAX_USAGE_TOKENS, parse_usage, parse_usage_header
from tests import validator_fixtures as vf

HUGE = 10 ** 400  # 401 digits


def test_usage_parser_bounds_every_count():
    header = json.dumps({"prompt_tokens": 3, "completion_tokens": HUGE})
    assert len(str(HUGE)) == 401
    with pytest.raises(UsageError):
        parse_usage_header(header)
    assert parse_usage({"prompt_tokens": 1, "completion_tokens": MAX_USAGE_TOKENS}) == \
        (1, MAX_USAGE_TOKENS)
    for bad in (MAX_USAGE_TOKENS + 1, True, 2.0, -1):
        with pytest.raises(UsageError):
            parse_usage({"completion_tokens": bad})


@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.none(),
                 st.booleans()))
def test_parse_usage_returns_bounded_ints_or_refuses(value):
    try:
        got = parse_usage({"prompt_tokens": 0, "completion_tokens": value})
    except UsageError:
        return
    assert type(got[1]) is int and 0 <= got[1] <= MAX_USAGE_TOKENS


class _Counter:
    def __init__(self, served: dict) -> None:
        self.served = served

    def take_served(self) -> dict:
        out, self.served = self.served, {}
        return out


def test_organic_source_zeroes_unbounded_counts():
    gw = _Counter({"a": HUGE, "b": -4, "c": "12", "d": 250})
    source = GatewayOrganicSource(gw, lambda: {1: "a", 2: "b", 3: "c", 4: "d"})
    assert source.served_tokens() == {1: 0.0, 2: 0.0, 3: 0.0, 4: 250.0}


@pytest.mark.parametrize("bad", [HUGE, float("nan"), float("inf"), -1.0, "x", None],
                         ids=["401-digits", "nan", "inf", "negative", "str", "none"])
def test_scoring_coerces_any_value(bad):
    ok = MinerResult(1, "h1", "c1", "a", True, requests=2, successes=2, tokens_per_s=10.0,
                     ttft_s=0.2, chute_id="k")
    odd = MinerResult(2, "h2", "c2", "a", True, requests=2, successes=2, tokens_per_s=bad,
                      ttft_s=bad, chute_id="k")
    cfg = ScoringConfig(organic_weight=0.5)
    scores = score_round([ok, odd], cfg, {1: 5.0, 2: bad})
    assert scores[1] == pytest.approx(1.0) and scores[2] == 0.0


class _HostileOrganic:
    """What the gateway used to hand over after relaying a 401-digit usage header."""

    def __init__(self, uid: int) -> None:
        self.uid = uid

    def served_tokens(self) -> dict[int, float]:
        return {self.uid: HUGE, self.uid + 100: float("nan")}  # type: ignore[dict-item]


@pytest.fixture
def subnet(tmp_path):
    with vf.local_subnet(tmp_path, {"honest": None}) as s:
        yield s


async def test_round_completes_and_sets_weights_with_hostile_organic_counts(subnet, tmp_path):
    honest = subnet.by_name("honest")
    config = ValidatorConfig(
        concurrency=2, timeout=5.0, dangerous_accept_simulated_tee=True,
        scoring=ScoringConfig(organic_weight=0.5),
        benchmark=BenchmarkConfig(prompts_per_miner=1, max_tokens=6, verify_sample=1))
    validator = Validator(config, chain=subnet.chain, wallet=subnet.validator_wallet,
                          verifier=vf.dev_verifier(), state=ValidatorState(tmp_path / "v.sqlite"),
                          organic=_HostileOrganic(honest.uid))
    try:
        report = await validator.run_round()
    finally:
        await validator.aclose()
    assert report.result_for(honest.uid).ok
    assert report.weights == {honest.uid: 1.0}
    assert report.weights_result is not None and report.weights_result.success
    assert ValidatorState(tmp_path / "v.sqlite").load().round_index == 1
