"""Embedded model throughput: tokens/s at batch 1, TTFT, prefill, per dtype and path.

    python bench/bench_inference.py [--quick] [--threads 1] [--device cpu] [--tokens 512]

Rows: raw greedy ``generate`` loop (float64 default and float32 for comparison), the
same through :class:`EmbeddedBackend.stream` (worker thread + asyncio queue), and
:func:`reference_completion` (what a validator pays per recomputed sample).
Ends with one JSON line holding the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import replace

import torch

from chutes_subnet.inference import EmbeddedBackend, reference_completion
from chutes_subnet.inference.generation import generate, get_model
from chutes_subnet.inference.model import DEFAULT_CONFIG
from chutes_subnet.inference.tokenizer import encode_prompt, render_chat

PROMPT = render_chat(
    [{"role": "user", "content": "Summarise how TDX attestation binds a key. " * 4}]
)


def _raw(dtype: str, tokens: int, device: str, repeats: int) -> dict:
    config = replace(DEFAULT_CONFIG, dtype=dtype)
    model = get_model(1234, config, device)
    ids = encode_prompt(PROMPT)
    list(generate(model, ids, 8))  # warm-up
    rates, ttfts = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        first = None
        count = 0
        for _step in generate(model, ids, tokens):
            count += 1
            if first is None:
                first = time.perf_counter() - started
        elapsed = time.perf_counter() - started
        rates.append((count - 1) / (elapsed - first))
        ttfts.append(first)
    return {"path": f"generate ({dtype})", "tokens": tokens, "prompt_tokens": len(ids),
            "tok_s": statistics.median(rates), "ttft_ms": 1000 * statistics.median(ttfts)}


async def _backend(tokens: int, device: str, threads: int, repeats: int) -> dict:
    backend = EmbeddedBackend(device=device, torch_threads=threads)
    body = {"prompt": PROMPT, "max_tokens": tokens}
    try:
        await backend.complete("/v1/completions", {"prompt": "w", "max_tokens": 4})
        rates, ttfts = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            first, count = None, 0
            async for chunk in backend.stream("/v1/completions", body):
                if chunk["choices"]:
                    count += 1
                    if first is None:
                        first = time.perf_counter() - started
            elapsed = time.perf_counter() - started
            rates.append((count - 1) / (elapsed - first))
            ttfts.append(first)
    finally:
        await backend.aclose()
    return {"path": "backend.stream (float64)", "tokens": tokens,
            "prompt_tokens": len(encode_prompt(PROMPT)),
            "tok_s": statistics.median(rates), "ttft_ms": 1000 * statistics.median(ttfts)}


def _reference(tokens: int) -> dict:
    body = {"prompt": PROMPT, "max_tokens": tokens}
    reference_completion("/v1/completions", body, seed=1234)
    started = time.perf_counter()
    reference_completion("/v1/completions", body, seed=1234)
    elapsed = time.perf_counter() - started
    return {"path": "reference_completion", "tokens": tokens,
            "prompt_tokens": len(encode_prompt(PROMPT)), "tok_s": tokens / elapsed,
            "ttft_ms": float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=None)
    args = parser.parse_args()
    tokens = args.tokens or (256 if args.quick else 1024)
    repeats = 2 if args.quick else 5
    torch.set_num_threads(args.threads)

    rows = [_raw(dtype, tokens, args.device, repeats) for dtype in ("float64", "float32")]
    rows.append(asyncio.run(_backend(tokens, args.device, args.threads, repeats)))
    rows.append(_reference(tokens))

    print(f"embedded model {DEFAULT_CONFIG}  device={args.device} threads={args.threads} batch=1")
    print(f"{'path':<28}{'prompt':>8}{'tokens':>8}{'tok/s':>10}{'TTFT ms':>10}")
    for row in rows:
        print(f"{row['path']:<28}{row['prompt_tokens']:>8}{row['tokens']:>8}"
              f"{row['tok_s']:>10.0f}{row['ttft_ms']:>10.1f}")
    figures = {
        "device": args.device, "threads": args.threads, "tokens": tokens,
        **{row["path"].split(" ")[0] + ("_f32" if "float32" in row["path"] else ""): {
            "tok_s": round(row["tok_s"], 1),
            "ttft_ms": None if row["ttft_ms"] != row["ttft_ms"] else round(row["ttft_ms"], 2)}
           for row in rows},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
