"""Benchmark prompts: deterministic per seed and miner, canaries, valid requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.inference import prepare
from chutes_subnet.validator import BenchmarkConfig, miner_prompts

SEED = bytes(range(32))
BENCH = BenchmarkConfig(prompts_per_miner=5, max_tokens=16, verify_sample=2)


def test_prompts_are_deterministic_per_seed_and_miner():
    a = miner_prompts(SEED, 3, "hk", BENCH, embedded=True)
    assert a == miner_prompts(SEED, 3, "hk", BENCH, embedded=True)
    assert a != miner_prompts(SEED, 4, "hk", BENCH, embedded=True)
    assert a != miner_prompts(bytes(32), 3, "hk", BENCH, embedded=True)
    assert a != miner_prompts(SEED, 3, "other", BENCH, embedded=True)
    assert sum(p.verify for p in a) == 2 and len(a) == 5
    with pytest.raises(ValueError):
        miner_prompts(b"short", 3, "hk", BENCH, embedded=True)


def test_upstream_prompts_carry_a_repeated_canary():
    cfg = BenchmarkConfig(prompts_per_miner=3, canary_repeats=2)
    prompts = miner_prompts(SEED, 1, "hk", cfg, embedded=False)
    canaries = [p for p in prompts if p.canary is not None]
    assert len(prompts) == 4 and len(canaries) == 2
    assert canaries[0].body == canaries[1].body and not any(p.verify for p in prompts)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 65535))
def test_every_prompt_is_a_valid_embedded_request(seed, uid):
    for p in miner_prompts(seed, uid, "hk", BENCH, embedded=True):
        prepared = prepare(p.path, p.body)
        assert prepared.max_tokens == BENCH.max_tokens
