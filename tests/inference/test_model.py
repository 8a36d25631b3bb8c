"""The embedded model: seeded weights, KV-cache decoding, greedy generation rules."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from chutes_subnet.inference.generation import Prepared, collect, generate
from chutes_subnet.inference.model import (
    DEFAULT_CONFIG,
    KVCache,
    ModelConfig,
    build_model,
    weights_digest,
)
from chutes_subnet.inference.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE, encode_prompt

#: Pinned: validators on other machines and versions must rebuild these exact weights.
DEFAULT_WEIGHTS_SHA256 = "684dab3934871b1a783b9e45280fb9587a0e5f50ff1450bb211453b3fe73dd4f"

SMALL = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_context=256)


def test_default_weights_are_pinned():
    assert weights_digest(build_model(1234)) == DEFAULT_WEIGHTS_SHA256


def test_same_seed_gives_bit_identical_weights_across_constructions():
    first, second = build_model(7, SMALL), build_model(7, SMALL)
    assert first is not second
    for (name_a, a), (name_b, b) in zip(
        first.named_parameters(), second.named_parameters(), strict=True
    ):
        assert name_a == name_b
        assert torch.equal(a, b)
    assert weights_digest(first) == weights_digest(second)


def test_same_seed_gives_same_weights_in_another_process():
    code = (
        "from chutes_subnet.inference.model import build_model, weights_digest;"
        "print(weights_digest(build_model(1234)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == DEFAULT_WEIGHTS_SHA256


def test_different_seed_gives_different_weights_and_output():
    a, b = build_model(1, SMALL), build_model(2, SMALL)
    assert weights_digest(a) != weights_digest(b)
    assert not torch.equal(a.embed.weight, b.embed.weight)
    ids = encode_prompt("same prompt for both seeds")
    out_a = [s.token for s in generate(a, ids, 32)]
    out_b = [s.token for s in generate(b, ids, 32)]
    assert out_a != out_b


def test_config_changes_weights():
    assert weights_digest(build_model(7, SMALL)) != weights_digest(
        build_model(7, replace(SMALL, init_gain=1.0))
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"d_model": 30, "n_heads": 4}, {"d_model": 0}, {"dtype": "float16"}, {"max_context": 1}],
)
def test_invalid_config_rejected(kwargs):
    with pytest.raises(ValueError):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True])
def test_invalid_seed_rejected(seed):
    with pytest.raises(ValueError, match="seed"):
        build_model(seed, SMALL)


def test_greedy_generation_is_deterministic_for_seed_and_prompt():
    model_a, model_b = build_model(1234), build_model(1234)
    ids = encode_prompt("<|user|>\nWhat is a TEE?\n<|assistant|>\n")
    run_a = [(s.token, s.text) for s in generate(model_a, ids, 40)]
    run_b = [(s.token, s.text) for s in generate(model_b, ids, 40)]
    assert run_a == run_b
    assert len(run_a) == 40


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kv_cache_matches_full_recompute(dtype):
    config = replace(SMALL, dtype=dtype)
    model = build_model(3, config)
    ids = torch.tensor([encode_prompt("kv cache equivalence check")])
    total = ids.shape[1]
    tol = 1e-10 if dtype == "float64" else 1e-4
    with torch.inference_mode():
        full = model(ids)
        cache = KVCache(config, total, "cpu")
        prefix = 5
        parts = [model(ids[:, :prefix], cache, 0)]
        for pos in range(prefix, total):
            parts.append(model(ids[:, pos : pos + 1], cache, pos))
        incremental = torch.cat(parts, dim=1)
        # a multi-token chunk after a prefix exercises the explicit causal mask
        cache2 = KVCache(config, total, "cpu")
        chunked = torch.cat([model(ids[:, :7], cache2, 0), model(ids[:, 7:], cache2, 7)], dim=1)
    assert full.shape == (1, total, VOCAB_SIZE)
    torch.testing.assert_close(incremental, full, atol=tol, rtol=0)
    torch.testing.assert_close(chunked, full, atol=tol, rtol=0)
    assert torch.equal(incremental.argmax(-1), full.argmax(-1))


def test_generate_equals_naive_greedy_without_cache():
    model = build_model(11, SMALL)
    ids = encode_prompt("naive loop")
    expected, seq = [], list(ids)
    with torch.inference_mode():
        for _ in range(24):
            token = int(model(torch.tensor([seq]))[0, -1].argmax())
            expected.append(token)
            if token == EOS_ID:
                break
            seq.append(token)
    assert [s.token for s in generate(model, ids, 24)] == expected


def test_bos_is_never_generated_and_prior_is_fixed():
    model = build_model(5, SMALL)
    assert model.prior[BOS_ID] == float("-inf")
    tokens = [s.token for s in generate(model, encode_prompt("x"), 200)]
    assert BOS_ID not in tokens


def test_forward_rejects_sequences_beyond_the_cache():
    model = build_model(5, SMALL)
    cache = KVCache(SMALL, 4, "cpu")
    with pytest.raises(ValueError):
        model(torch.tensor([[1, 2, 3, 4, 5]]), cache, 0)
    with pytest.raises(ValueError):
        model(torch.tensor([[1]]), None, 3)
    with pytest.raises(ValueError):
        KVCache(SMALL, SMALL.max_context + 1, "cpu")


class _Scripted(torch.nn.Module):
    """Stands in for the network only: emits a fixed token script as one-hot logits."""

    def __init__(self, script: list[int]) -> None:
        super().__init__()
        self.config = SMALL
        self.device = torch.device("cpu")
        self.script = script
        self.calls = 0

    def forward(self, ids, cache=None, start=0):
        logits = torch.zeros(1, ids.shape[1], VOCAB_SIZE, dtype=torch.float64)
        logits[0, -1, self.script[self.calls]] = 1.0
        self.calls += 1
        return logits


def test_eos_stops_with_finish_reason_stop_and_flushes_pending_bytes():
    euro, partial = "€".encode(), "😀".encode()[:2]
    model = _Scripted([*euro, *partial, EOS_ID, ord("x")])
    steps = list(generate(model, encode_prompt("p"), 50))
    assert [s.token for s in steps] == [*euro, *partial, EOS_ID]
    assert [s.text for s in steps] == ["", "", "€", "", "", "\ufffd"]
    assert [s.finish_reason for s in steps] == [None] * 5 + ["stop"]
    result = collect(model.__class__([*euro, EOS_ID]), Prepared("text", (BOS_ID,), 50))
    assert (result.text, result.finish_reason, result.completion_tokens) == ("€", "stop", 4)


def test_max_tokens_gives_finish_reason_length_and_flushes():
    model = _Scripted([ord("a"), 0xE2, 0x82, ord("b")])
    steps = list(generate(model, encode_prompt("p"), 3))
    assert [s.text for s in steps] == ["a", "", "\ufffd"]
    assert steps[-1].finish_reason == "length"
    assert model.calls == 3  # the last token is not fed back


def test_cancel_stops_generation():
    import threading

    cancel = threading.Event()
    model = build_model(5, SMALL)
    steps = []
    for step in generate(model, encode_prompt("x"), 100, cancel):
        steps.append(step)
        if len(steps) == 3:
            cancel.set()
    assert len(steps) == 3
    result = collect(model, Prepared("text", tuple(encode_prompt("x")), 100), cancel)
    assert result.finish_reason == "cancelled" and result.completion_tokens == 0


def test_default_config_is_the_documented_one():
    assert ModelConfig() == DEFAULT_CONFIG
    assert (DEFAULT_CONFIG.dtype, DEFAULT_CONFIG.max_context) == ("float64", 8192)
