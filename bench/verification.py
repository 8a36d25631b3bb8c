"""Logprob verification figures on a tiny real model: pass rate of an honest engine,
detection rate of each cheat, validator CPU per verified answer.

Honest: ``transformers serve`` (a real third-party engine, bf16 + SDPA) over the
chute's weights. Cheats, each answering the same benchmark prompts greedily: the same
architecture with other seeds, a smaller config, and the embedded toy model under the
chute's name. The validator's reference is the chute's weights in fp32 with eager
attention (tests/real_engine.py builds every model offline). Each answer goes through
the validator's real check (:func:`chutes_subnet.validator.real_answers.check_real_answer`:
token count, usage claim, teacher-forced logprob judgement of a 32-token sample).

    python bench/verification.py [--quick] [--answers 48] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _prompts(n: int, max_tokens: int) -> list:
    from chutes_subnet.validator import BenchmarkConfig, miner_prompts
    from chutes_subnet.validator.prompts import BenchPrompt

    cfg = BenchmarkConfig(prompts_per_miner=n, max_tokens=max_tokens, verify_sample=n)
    out = miner_prompts(os.urandom(32), 1, "bench", cfg, embedded=True)
    return [BenchPrompt(p.path, {k: v for k, v in p.body.items()
                                 if k not in ("stream", "stream_options")}, verify=True)
            for p in out]


def _served(url: str, model: str, prompt) -> tuple[str, int]:
    import httpx

    data = httpx.post(url + prompt.path, json={**prompt.body, "model": model}, timeout=120).json()
    choice = data["choices"][0]
    return (choice["message"]["content"] if "message" in choice else choice["text"],
            data["usage"]["completion_tokens"])


def _greedy(ref, prompt, max_tokens: int) -> tuple[str, int]:
    import torch

    ids = ref.prompt_ids(prompt.path, prompt.body)
    with torch.inference_mode():
        out = ref._lm().generate(torch.tensor([ids]), max_new_tokens=max_tokens,
                                 do_sample=False, pad_token_id=1)
    new = out[0][len(ids):]
    return ref.tokenizer.decode(new, skip_special_tokens=True), len(new)


def _verify_all(reference, prompts, answers) -> dict:
    from chutes_subnet.validator.failures import EvaluationFailure
    from chutes_subnet.validator.real_answers import check_real_answer

    passed, gaps, reasons, cpu = 0, [], {}, []
    for prompt, (text, claimed) in zip(prompts, answers, strict=True):
        t0 = time.process_time()
        try:
            found = asyncio.run(check_real_answer(reference, prompt, text, claimed,
                                                  random.Random(len(cpu))))
            passed += 1
            gaps.append(found.verdict.mean_gap if found.verdict else 0.0)
        except EvaluationFailure as failure:
            reasons[failure.reason] = reasons.get(failure.reason, 0) + 1
        cpu.append(time.process_time() - t0)
    return {"answers": len(prompts), "passed": passed, "rate": passed / len(prompts),
            "reasons": reasons, "mean_gap": statistics.fmean(gaps) if gaps else None,
            "cpu_ms_per_answer": 1000 * statistics.fmean(cpu)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 answers per population")
    parser.add_argument("--answers", type=int, default=None)
    parser.add_argument("--max-tokens", dest="max_tokens", type=int, default=32)
    args = parser.parse_args()
    n = args.answers or (12 if args.quick else 48)

    import torch

    torch.set_num_threads(1)
    from chutes_subnet.inference import run_generation
    from chutes_subnet.validator.logprobs import LogprobPolicy
    from chutes_subnet.validator.reference import ChuteReference, ReferenceModel
    from tests.real_engine import TinyLlama, build_model, serving

    prompts = _prompts(n, args.max_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        chute = build_model(root / "chute")
        cheats = {
            "other seed (2)": build_model(root / "s2", TinyLlama(seed=2)),
            "other seed (3)": build_model(root / "s3", TinyLlama(seed=3)),
            "smaller config (1 layer, d=32)": build_model(
                root / "small", TinyLlama(layers=1, hidden=32, heads=2, kv_heads=1)),
        }
        reference = ChuteReference(ReferenceModel(chute, torch_threads=1),
                                   LogprobPolicy(sample_tokens=32))
        answers: dict[str, list[tuple[str, int]]] = {}
        with serving(chute, dtype="bfloat16", attn="sdpa") as engine:
            answers["honest: transformers serve, bf16"] = [
                _served(engine.url, engine.upstream_model, p) for p in prompts]
        for name, path in cheats.items():
            model = ReferenceModel(path, torch_threads=1)
            answers[name] = [_greedy(model, p, args.max_tokens) for p in prompts]
        toy = []
        for p in prompts:
            result = run_generation(p.path, {**p.body, "model": "x"}, seed=1234)
            toy.append((result.text, result.completion_tokens))
        answers["embedded toy under the chute's name"] = toy
        figures = {name: _verify_all(reference, prompts, a) for name, a in answers.items()}

    honest_key = next(iter(figures))
    width = max(len(k) for k in figures)
    print(f"logprob verification, tiny Llama chute, {n} answers x {args.max_tokens} tokens "
          f"per population (sample 32 tokens, max_rank 5, max_mean_gap 0.5)")
    print(f"  {'population':<{width}}  passed  rate    mean gap  reasons{'':<18}  CPU ms/answer")
    for name, f in figures.items():
        gap = f"{f['mean_gap']:.3f}" if f["mean_gap"] is not None else "-"
        reasons = ", ".join(f"{k} x{v}" for k, v in f["reasons"].items()) or "-"
        print(f"  {name:<{width}}  {f['passed']:>3}/{f['answers']:<3} {f['rate']:>5.0%}  "
              f"{gap:>8}  {reasons:<25}  {f['cpu_ms_per_answer']:>8.1f}")
    cheat_rates = {k: 1 - v["rate"] for k, v in figures.items() if k != honest_key}
    summary = {
        "answers": n, "max_tokens": args.max_tokens,
        "honest_pass_rate": figures[honest_key]["rate"],
        "detection_rate": {k: round(v, 4) for k, v in cheat_rates.items()},
        "cpu_ms_per_verified_answer": round(figures[honest_key]["cpu_ms_per_answer"], 2),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
