"""Logprob verification: the pure judgement, and its figures on the tiny real model.

Honest answers come from ``transformers serve`` (bf16 + SDPA) over the chute's weights;
the validator's reference is the same weights in fp32 with eager attention. Cheats
are what another engine would emit greedily: the same architecture with other
seeds, a smaller config, and the embedded toy model under the chute's name.
"""

from __future__ import annotations

import random

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chutes_subnet.inference import run_generation
from chutes_subnet.validator.failures import EvaluationFailure
from chutes_subnet.validator.logprobs import LogprobPolicy, TokenScore, judge, sample_positions
from chutes_subnet.validator.prompts import BenchPrompt
from chutes_subnet.validator.real_answers import check_real_answer
from chutes_subnet.validator.reference import ChuteReference, ReferenceModel
from chutes_subnet.validator.tokencount import UsageTolerance, usage_mismatch
from tests.real_engine import TinyLlama, build_model

MAX_TOKENS = 24
PROMPTS = [BenchPrompt("/v1/chat/completions",
                       {"messages": [{"role": "user", "content": f"Describe the comet {i}."}],
                        "max_tokens": MAX_TOKENS, "temperature": 0}, verify=True)
           for i in range(4)] + \
          [BenchPrompt("/v1/completions", {"prompt": f"the ledger {i}\n", "max_tokens": MAX_TOKENS,
                                           "temperature": 0}, verify=True) for i in range(2)]


# --- the pure parts -------------------------------------------------------------------------

def test_judge_thresholds():
    policy = LogprobPolicy(max_rank=5, max_unlikely_share=0.25, max_mean_gap=0.5)
    assert judge([TokenScore(1, 0.0)] * 8, policy).ok
    near = [TokenScore(1, 0.0)] * 6 + [TokenScore(6, 0.3)] * 2          # 25% unlikely: ok
    assert judge(near, policy).ok
    many = [TokenScore(1, 0.0)] * 5 + [TokenScore(6, 0.3)] * 3          # 37.5%: rank
    assert judge(many, policy).reason == "rank"
    gap = [TokenScore(2, 0.6)] * 4                                      # ranks fine, gap not
    verdict = judge(gap, policy)
    assert verdict.reason == "mean_gap" and verdict.mean_gap == pytest.approx(0.6)
    assert judge([TokenScore(1, float("nan"))], policy).reason == "mean_gap"
    assert judge([], policy).reason == "empty"
    assert "worst rank 6" in judge(many, policy).detail()


@pytest.mark.parametrize("kw", [{"sample_tokens": 0}, {"max_rank": 0},
                                {"max_unlikely_share": 1.0}, {"max_mean_gap": float("inf")}])
def test_policy_refuses_nonsense(kw):
    with pytest.raises(ValueError):
        LogprobPolicy(**kw)


@given(st.lists(st.builds(TokenScore, st.integers(-5, 10**6),
                          st.floats(allow_nan=True, allow_infinity=True)), max_size=40),
       st.integers(1, 50), st.floats(0, 0.99), st.floats(0, 100))
def test_judge_is_total_and_fails_closed(scores, max_rank, share, gap):
    """Any scores (a broken reference included) give a verdict, never an exception;
    NaN or infinite gaps never pass."""
    verdict = judge(scores, LogprobPolicy(max_rank=max_rank, max_unlikely_share=share,
                                          max_mean_gap=gap))
    assert verdict.ok == (verdict.reason is None)
    if any(s.gap != s.gap or s.gap == float("inf") for s in scores):
        assert not verdict.ok


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_usage_mismatch_is_symmetric_and_bounded(claimed, counted):
    tol = UsageTolerance()
    assert (usage_mismatch(claimed, counted, tol) is None) == \
        (abs(claimed - counted) <= tol.slack + int(tol.share * counted))


def test_sample_positions():
    rng = random.Random(3)
    assert sample_positions(0, 4, rng) == [] and sample_positions(3, 8, rng) == [0, 1, 2]
    got = sample_positions(100, 10, rng)
    assert len(set(got)) == 10 and got == sorted(got) and max(got) < 100


def test_usage_tolerance():
    tol = UsageTolerance(slack=2, share=0.05)
    assert usage_mismatch(66, 64, tol) is None and usage_mismatch(62, 64, tol) is None
    assert usage_mismatch(100, 60, tol) == (
        "usage claims 100 completion tokens; the chute's tokenizer counts 60 (tolerance 5)")
    assert usage_mismatch(64, 1, tol) is not None


# --- on the tiny real model ----------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return ChuteReference(ReferenceModel(tiny_model_dir, torch_threads=1),
                          LogprobPolicy(sample_tokens=16))


@pytest.fixture(scope="module")
def cheat_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cheats")
    return {
        "other-seed": build_model(root / "seed2", TinyLlama(seed=2)),
        "other-seed-3": build_model(root / "seed3", TinyLlama(seed=3)),
        "smaller-config": build_model(root / "small", TinyLlama(layers=1, hidden=32, heads=2,
                                                                kv_heads=1)),
    }


def _greedy(ref: ReferenceModel, prompt: BenchPrompt) -> str:
    """What an engine serving ``ref``'s weights answers greedily (transformers generate)."""
    import torch

    ids = ref.prompt_ids(prompt.path, prompt.body)
    with torch.inference_mode():
        out = ref._lm().generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS,
                                 do_sample=False, pad_token_id=1)
    return ref.tokenizer.decode(out[0][len(ids):], skip_special_tokens=True)


async def _served(engine, prompt: BenchPrompt) -> tuple[str, int]:
    async with httpx.AsyncClient(timeout=60) as client:
        resp = await client.post(engine.url + prompt.path,
                                 json={**prompt.body, "model": engine.upstream_model})
    data = resp.json()
    choice = data["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    return text, data["usage"]["completion_tokens"]


async def test_honest_real_engine_passes(tiny_engine, reference):
    for prompt in PROMPTS:
        text, claimed = await _served(tiny_engine, prompt)
        found = await check_real_answer(reference, prompt, text, claimed, random.Random(1))
        assert found.counted_tokens == claimed == MAX_TOKENS
        assert found.verdict is not None and found.verdict.ok, found.verdict
        assert found.verdict.mean_gap < 0.1          # bf16 vs fp32: near-zero distance


async def test_other_weights_and_the_toy_fail(cheat_dirs, reference):
    engines = {name: ReferenceModel(d, torch_threads=1) for name, d in cheat_dirs.items()}
    answers = {name: [_greedy(m, p) for p in PROMPTS] for name, m in engines.items()}
    answers["embedded-toy"] = [run_generation(p.path, {**p.body, "model": "x"}, seed=1234).text
                               for p in PROMPTS]
    for name, texts in answers.items():
        for prompt, text in zip(PROMPTS, texts, strict=True):
            claimed = reference.model.count_tokens(text)   # a cheat that counts right
            with pytest.raises(EvaluationFailure) as info:
                await check_real_answer(reference, prompt, text, claimed, random.Random(1))
            assert info.value.reason == "wrong_output:logprob", (name, info.value.detail)


async def test_usage_is_checked_on_every_answer_and_bounded(reference):
    prompt = BenchPrompt(PROMPTS[0].path, PROMPTS[0].body, verify=False)
    found = await check_real_answer(reference, prompt, "abcd", 5)
    assert found.counted_tokens == 4 and found.verdict is None   # counted, not scored
    for text, claimed, needle in (("x", MAX_TOKENS, "counts 1"),
                                  ("y" * (MAX_TOKENS + 3), MAX_TOKENS + 3, "more than max_tokens"),
                                  ("z" * (64 * MAX_TOKENS + 1), 1, "longer than max_tokens")):
        with pytest.raises(EvaluationFailure) as info:
            await check_real_answer(reference, prompt, text, claimed)
        assert info.value.reason == "wrong_output:usage" and needle in info.value.detail


def test_reference_book_from_the_cli_spec(tiny_model_dir):
    from chutes_subnet.validator.reference import ReferenceBook

    book = ReferenceBook.from_spec(f"org/a={tiny_model_dir}, org/b={tiny_model_dir}")
    assert len(book) == 2 and "org/a" in book and book.get("org/c") is None
    assert book.get("org/b").model.count_tokens("abc") == 3
    assert len(ReferenceBook.from_spec("")) == 0
    for bad in ("org/a", "=dir", f"org/a={tiny_model_dir},org/a={tiny_model_dir}"):
        with pytest.raises(ValueError):
            ReferenceBook.from_spec(bad)


def test_reference_is_used_only_for_the_attested_tokenizer(reference, tiny_model_dir, tmp_path):
    """The manifest's tokenizer_digest (the release the miner attested) must be the
    reference's: the validator counts and scores with the tokenizer the release declares."""
    from chutes_subnet.attestation.model_files import tokenizer_digest
    from chutes_subnet.attestation.verify.manifest import WorkloadManifest

    digest = tokenizer_digest(tiny_model_dir)
    assert reference.model.tokenizer_digest == digest
    release = {"version": 1, "chute_id": "c", "model_id": "m", "model_revision": "r",
               "weights_digest": "sha256:" + "0" * 64, "tokenizer_digest": digest,
               "engine": "vllm", "engine_version": "1", "image_digest": "sha256:" + "1" * 64,
               "dtype": "bfloat16", "quantization": "none", "max_context": 4096}
    assert reference.matches(WorkloadManifest.from_dict(release))
    other = tmp_path / "t"
    other.mkdir()
    (other / "tokenizer.json").write_text((tiny_model_dir / "tokenizer.json").read_text() + " ")
    release["tokenizer_digest"] = tokenizer_digest(other)
    assert not reference.matches(WorkloadManifest.from_dict(release))
