"""Benchmark prompts: unpredictable to miners, reproducible from the round seed.

Each round draws a fresh secret 32-byte seed. A miner's prompts are a pure function
of ``(seed, uid, hotkey, BenchmarkConfig)``, so different miners get different
prompts (no answer sharing between colluding miners) and a round can be replayed
from its seed for an audit. The seed is only written to the state after the round.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from typing import Any

from .config import BenchmarkConfig

__all__ = ["BenchPrompt", "lengthen", "miner_prompts", "new_round_seed", "on_path"]

_NOUNS = (
    "river", "lantern", "protocol", "garden", "compiler", "glacier", "market", "violin",
    "satellite", "harbor", "theorem", "forest", "engine", "library", "desert", "signal",
    "orchard", "kernel", "bridge", "comet", "ledger", "canyon", "circuit", "meadow",
)
_VERBS = ("describe", "explain", "summarize", "compare", "list facts about", "write a poem about",
          "invent a story about", "give advice on")
_STYLES = ("briefly", "in plain words", "for a child", "like a scientist", "as a haiku",
           "step by step", "with an example", "in one paragraph")


@dataclass(frozen=True)
class BenchPrompt:
    """One benchmark request. ``verify`` marks it for exact local recomputation;
    prompts sharing a ``canary`` id must produce identical text."""

    path: str
    body: dict[str, Any] = field(hash=False)
    verify: bool = False
    canary: int | None = None


def new_round_seed() -> bytes:
    """32 fresh bytes from the OS CSPRNG."""
    return os.urandom(32)


def _rng(seed: bytes, uid: int, hotkey: str) -> random.Random:
    digest = hashlib.sha256(b"chutes-validator/prompts\x00" + seed + uid.to_bytes(2, "big")
                            + hotkey.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest, "big"))  # noqa: S311 - seeded from a secret digest: reproducible prompts, not keys


def _text(rng: random.Random) -> str:
    a, b = rng.sample(_NOUNS, 2)
    tag = "-".join(rng.choice(_NOUNS) for _ in range(2)) + f"-{rng.randrange(10**6):06d}"
    verb, style = rng.choice(_VERBS).capitalize(), rng.choice(_STYLES)
    return f"{verb} the {a} and the {b} {style} (ref {tag})."


def _request(rng: random.Random, max_tokens: int) -> tuple[str, dict[str, Any]]:
    text = _text(rng)
    if rng.random() < 0.25:
        return "/v1/completions", {"prompt": text + "\n", "max_tokens": max_tokens,
                                   "temperature": 0, "stream": True}
    messages = [{"role": "user", "content": text}]
    if rng.random() < 0.5:
        messages.insert(0, {"role": "system", "content": "You are a concise assistant."})
    return "/v1/chat/completions", {"messages": messages, "max_tokens": max_tokens,
                                    "temperature": 0, "seed": 0, "stream": True,
                                    "stream_options": {"include_usage": True}}


def miner_prompts(seed: bytes, uid: int, hotkey: str, config: BenchmarkConfig,
                  *, embedded: bool, scored: bool = False) -> list[BenchPrompt]:
    """The prompts for one miner this round.

    ``embedded``: the miner serves the validator-recomputable embedded model, so
    ``config.verify_sample`` prompts are marked for exact verification. Otherwise the
    first prompt is repeated ``config.canary_repeats`` times as a greedy canary, and
    with ``scored`` (the validator holds a reference of the model)
    ``config.verify_sample`` prompts are also marked for logprob verification.
    """
    if len(seed) != 32:
        raise ValueError("round seed must be 32 bytes")
    rng = _rng(seed, uid, hotkey)
    requests = [_request(rng, config.max_tokens) for _ in range(config.prompts_per_miner)]
    checked = set(rng.sample(range(len(requests)), config.verify_sample)) \
        if embedded or scored else set()
    out = [BenchPrompt(p, b, verify=i in checked) for i, (p, b) in enumerate(requests)]
    if embedded:
        return out
    if config.canary_repeats >= 2:
        path, body = requests[0]
        out[0] = BenchPrompt(path, body, verify=out[0].verify, canary=0)
        repeats = config.canary_repeats - 1
        out.extend(BenchPrompt(path, dict(body), canary=0) for _ in range(repeats))
    rng.shuffle(out)
    return out


def lengthen(path: str, body: dict[str, Any], extra: int) -> dict[str, Any]:
    """``body`` with about ``extra`` more characters of prompt text (ASCII words, so one
    JSON byte each), appended to the last message or the completion prompt."""
    if extra <= 0:
        return body
    words = " ".join(_NOUNS[i % len(_NOUNS)] for i in range(extra // 4 + 1))
    filler = (" " + words)[:extra]
    out = dict(body)
    if path == "/v1/completions":
        out["prompt"] = str(out["prompt"]) + filler
        return out
    messages = [dict(m) for m in out["messages"]]
    messages[-1]["content"] = str(messages[-1]["content"]) + filler
    out["messages"] = messages
    return out


def on_path(prompt: BenchPrompt, path: str) -> BenchPrompt:
    """``prompt`` sent to ``path`` instead (the same text as a chat message or as a
    completion prompt), so benchmark paths follow organic ones."""
    if path == prompt.path or path not in ("/v1/chat/completions", "/v1/completions"):
        return prompt
    body = {k: v for k, v in prompt.body.items()
            if k not in ("messages", "prompt", "seed", "stream_options")}
    if path == "/v1/completions":
        text = "\n".join(str(m["content"]) for m in prompt.body["messages"])
        body["prompt"] = text + "\n"
    else:
        body["messages"] = [{"role": "user", "content": str(prompt.body["prompt"]).strip()}]
        body.update(seed=0, stream_options={"include_usage": True})
    return BenchPrompt(path, body, prompt.verify, prompt.canary)
