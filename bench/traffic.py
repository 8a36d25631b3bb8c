"""Traffic analysis of E2EE streams: the token-length attack, before and after padding.

Usage: python bench/traffic.py [--quick]

Weiss et al. ("What Was Your Prompt? A Remote Keylogging Attack on AI Assistants",
USENIX Security 2024) read token lengths off the sizes of encrypted stream frames and
rebuilt answers from them. This plays that attack against what a passive observer of
this project's traffic sees: the exact SSE bytes of each frame, made by the miner's own
framer (:func:`chutes_subnet.miner.envelopes.open_envelope`) for

* ``v1``            — the public client's format (one frame per token, random nonce);
* ``v2 unpadded``   — v2 as first specified (one frame per token, no padding): *before*;
* ``v2 padded``     — the default now (512-byte buckets): *after*;
* ``v2 coalesced``  — padded, and the miner's coalescing policy
  (:mod:`chutes_subnet.miner.coalesce`) over tokens ready together: the first alone,
  then as many as fit one 512-byte bucket (two chunk lines).

The attacker calibrates a size -> length map on one text (for each observed frame size
the most common token length, and the mean length as a continuous estimate; the
paper's first stage) and predicts the token lengths of another. Reported per format:
exact-length accuracy, Pearson correlation of the estimate with the true lengths, the
chance level (always guessing the most common length), distinct frame sizes, and bytes
on the wire relative to unpadded v2. Goal: accuracy at chance and
correlation ~0 after padding. Envelope sizes (request/answer lengths) are reported as
how many distinct sizes 1..N-byte prompts produce under Padmé.

Tokens: prose split like a BPE tokenizer would (words with their leading space, cut
into pieces of at most 7 characters, punctuation apart): lengths 1-7, mean ~4.
Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import statistics
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chutes_subnet.e2ee import PADDING_NONE, PADDING_PADME, KeyPair, RequestContext, v1, v2
from chutes_subnet.miner.coalesce import coalesce
from chutes_subnet.miner.envelopes import open_envelope

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there would their we him been has when who will "
         "more no if out so said what up its about into than them can only other new some could "
         "time these two may then do first any my now such like our over man me even most made "
         "after also did many before must through back years where much your way well down should "
         "because each just those people how too little state good very make world still own see "
         "encryption attestation enclave validator throughput confidential inference miner "
         "measurement certificate protocol gateway receipt padding bandwidth").split()
CTX = dict(chute_id="chute", instance_id="instance", nonce="0" * 32, path="/v1/chat/completions")


def prose(seed: int, words: int) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(words):
        w = rng.choice(WORDS)
        out.append(w.capitalize() if rng.random() < 0.08 else w)
        if rng.random() < 0.1:
            out.append(rng.choice(",.;:!?"))
    return " ".join(out).replace(" ,", ",").replace(" .", ".")


def tokenize(text: str) -> list[str]:
    """BPE-like pieces: ' word' cut into <= 7-character pieces; punctuation alone."""
    tokens: list[str] = []
    for m in re.finditer(r" ?[A-Za-z]+|[^A-Za-z ]", text):
        piece = m.group(0)
        while len(piece) > 7:
            tokens.append(piece[:7])
            piece = piece[7:]
        tokens.append(piece)
    return tokens


def chunk_line(token: str) -> str:
    chunk = {"id": "chatcmpl-4f1c2a", "object": "chat.completion.chunk", "created": 1764650000,
             "model": "chutes/Example-8B",
             "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}]}
    return "data: " + json.dumps(chunk, separators=(",", ":"))


def _coalesced(tokens: list[str], capacity: int) -> list[list[str]]:
    """The miner's own coalescing policy (:func:`chutes_subnet.miner.coalesce.coalesce`)
    over tokens that are ready together (a fast model): the first alone, then as many
    as fit one bucket."""
    async def source() -> AsyncIterator[tuple[str, bytes]]:
        for token in tokens:
            yield token, chunk_line(token).encode("utf-8")

    async def run() -> list[list[str]]:
        batches = coalesce(source(), window=1.0, capacity=capacity,
                           cost=lambda entry: v2.line_cost(entry[1]), eager_until=lambda _: True)
        async with contextlib.aclosing(batches):
            return [[token for token, _ in batch] async for batch in batches]

    return asyncio.run(run())


def frames(fmt: str, tokens: list[str], kp: KeyPair) -> list[tuple[int, list[str]]]:
    """(SSE bytes, tokens) per frame as the miner's framer writes them (an observer sees
    the bytes)."""
    version = 1 if fmt == "v1" else 2
    padding = PADDING_NONE if fmt in ("v1", "v2 unpadded") else PADDING_PADME
    ctx = RequestContext(stream=True, padding=padding, **CTX)
    blob = v2.seal_request(kp.public_bytes, ctx, {"x": 1})[0] if version == 2 \
        else v1.seal_request(kp.public_bytes, {"x": 1})[0]
    opened = open_envelope(version, kp, ctx, blob)
    framer = opened.stream()
    framer.start()
    if fmt == "v2 coalesced":
        assert framer.coalesce_capacity is not None
        return [(len(framer.chunk_lines([chunk_line(t).encode("utf-8") for t in batch])), batch)
                for batch in _coalesced(tokens, framer.coalesce_capacity)]
    return [(len(framer.chunk(chunk_line(t))), [t]) for t in tokens]


def frame_sizes(fmt: str, tokens: list[str], kp: KeyPair) -> list[int]:
    """SSE bytes per frame (what an observer sees)."""
    return [size for size, _ in frames(fmt, tokens, kp)]


class SizeModel:
    """What the calibration text teaches: per frame size, the most common and the mean
    token length (a size never seen maps to the nearest one seen)."""

    def __init__(self, sizes: list[int], lengths: list[int]) -> None:
        seen: dict[int, list[int]] = {}
        for s, n in zip(sizes, lengths, strict=True):
            seen.setdefault(s, []).append(n)
        self._mode = {s: Counter(ns).most_common(1)[0][0] for s, ns in seen.items()}
        self._mean = {s: statistics.fmean(ns) for s, ns in seen.items()}

    def _near(self, size: int) -> int:
        return min(self._mode, key=lambda s: abs(s - size))

    def guess(self, size: int) -> int:
        return self._mode[self._near(size)]

    def estimate(self, size: int) -> float:
        return self._mean[self._near(size)]


def _pearson(xs: list[float], ys: list[int]) -> float:
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return 0.0
    return statistics.correlation(xs, ys)


def attack(fmt: str, train: list[str], test: list[str], kp: KeyPair) -> dict[str, float]:
    """Calibrate on ``train``, predict ``test``: per frame, the length of the token(s) it
    carries (a coalesced frame's truth is the sum of its tokens' lengths)."""
    calib = frames(fmt, train, kp)
    model = SizeModel([size for size, _ in calib], [sum(map(len, ts)) for _, ts in calib])
    observed = frames(fmt, test, kp)
    sizes = [size for size, _ in observed]
    truth = [sum(map(len, ts)) for _, ts in observed]
    predicted = [model.estimate(s) for s in sizes]
    guesses = [model.guess(s) for s in sizes]
    common = Counter(sum(map(len, ts)) for _, ts in calib).most_common(1)[0][0]
    return {
        "accuracy": sum(g == t for g, t in zip(guesses, truth, strict=True)) / len(truth),
        "chance": sum(t == common for t in truth) / len(truth),
        "correlation": _pearson(predicted, truth),
        "distinct_frame_sizes": len(set(sizes)),
        "frames": len(sizes),
        "bytes_per_token": sum(sizes) / len(test),
    }


def envelope_sizes(max_len: int, kp: KeyPair) -> dict[str, int]:
    """Distinct request sizes for prompts of 1..max_len characters, unpadded vs padded."""
    out = {}
    for name, padding in (("unpadded", PADDING_NONE), ("padded", PADDING_PADME)):
        ctx = RequestContext(stream=False, padding=padding, **CTX)
        out[name] = len({len(v2.seal_request(kp.public_bytes, ctx,
                                             {"messages": [{"role": "user", "content": "x" * n}]})[0])
                         for n in range(1, max_len + 1)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter texts")
    args = ap.parse_args()
    words = 400 if args.quick else 4000
    kp = KeyPair.generate()
    train, test = tokenize(prose(1, words)), tokenize(prose(2, words))
    formats = ("v1", "v2 unpadded", "v2 padded", "v2 coalesced")
    results = {fmt: attack(fmt, train, test, kp) for fmt in formats}
    base = results["v2 unpadded"]["bytes_per_token"]
    print(f"token-length attack on {len(test)} tokens (calibrated on {len(train)}), "
          "frame sizes as the miner writes them")
    print()
    print(f"{'format':>13} | {'accuracy':>8} | {'chance':>6} | {'correlation':>11} | "
          f"{'frame sizes':>11} | {'bytes/token':>11} | {'vs unpadded':>11}")
    print("-" * 88)
    for fmt, r in results.items():
        r["overhead"] = r["bytes_per_token"] / base
        print(f"{fmt:>13} | {r['accuracy']:>8.1%} | {r['chance']:>6.1%} | {r['correlation']:>11.3f} | "
              f"{r['distinct_frame_sizes']:>11} | {r['bytes_per_token']:>11.1f} | {r['overhead']:>10.2f}x")
    env = envelope_sizes(300 if args.quick else 2000, kp)
    print()
    print(f"request envelopes for prompts of 1..{300 if args.quick else 2000} characters: "
          f"{env['unpadded']} distinct sizes unpadded, {env['padded']} padded (Padmé)")
    verdict = all(r["accuracy"] <= r["chance"] + 1e-9 and abs(r["correlation"]) < 0.05
                  for r in (results["v2 padded"], results["v2 coalesced"]))
    print(f"after padding (and coalescing) the attack is at chance: {'YES' if verdict else 'NO'}")
    print(json.dumps({"bench": "traffic", "quick": args.quick, "tokens": len(test),
                      "attack": results, "envelope_sizes": env, "at_chance_after": verdict},
                     separators=(",", ":"), sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
