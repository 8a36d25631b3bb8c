"""Checks of one decrypted benchmark answer of a real model against the chute's reference.

In order, for every answer (first failure wins):

1. the text is not longer than ``max_tokens`` could produce (``MAX_CHARS_PER_TOKEN``
   characters a token), so tokenizing it is bounded work;
2. the validator counts the completion tokens with the chute's tokenizer; the miner's
   claim must agree within the chute's :class:`~.tokencount.UsageTolerance`
   (``wrong_output:usage``), and the count may not exceed ``max_tokens`` + slack;
3. for prompts marked ``verify``: a sample of the answer's tokens is scored
   teacher-forced under the reference model and judged by the chute's
   :class:`~.logprobs.LogprobPolicy` (``wrong_output:logprob``).

Returns the validator's count (throughput uses it, never the claim) and whether the
logprob check ran and passed. CPU work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from .failures import EvaluationFailure
from .logprobs import LogprobVerdict, judge, sample_positions
from .prompts import BenchPrompt
from .reference import MAX_CHARS_PER_TOKEN, ChuteReference
from .tokencount import usage_mismatch

__all__ = ["RealCheck", "check_real_answer"]


@dataclass(frozen=True)
class RealCheck:
    """What the checks found about one answer."""

    counted_tokens: int
    verdict: LogprobVerdict | None  #: None when the prompt was not sampled for scoring


def _check(reference: ChuteReference, prompt: BenchPrompt, text: str, claimed: int,
           rng: random.Random) -> RealCheck:
    max_tokens = int(prompt.body.get("max_tokens") or 0)
    if max_tokens and len(text) > max_tokens * MAX_CHARS_PER_TOKEN:
        raise EvaluationFailure("wrong_output:usage", "answer is longer than max_tokens allows")
    model = reference.model
    output_ids = model.encode(text)
    counted = len(output_ids)
    if max_tokens and counted > max_tokens + reference.usage.slack:
        raise EvaluationFailure("wrong_output:usage",
                                f"answer holds {counted} tokens, more than max_tokens")
    mismatch = usage_mismatch(claimed, counted, reference.usage)
    if mismatch is not None:
        raise EvaluationFailure("wrong_output:usage", mismatch)
    if not prompt.verify or counted == 0:  # an empty answer has nothing to score
        return RealCheck(counted, None)
    positions = sample_positions(counted, reference.policy.sample_tokens, rng)
    scores = model.score(model.prompt_ids(prompt.path, prompt.body), output_ids, positions)
    verdict = judge(scores, reference.policy)
    if not verdict.ok:
        raise EvaluationFailure("wrong_output:logprob", verdict.detail())
    return RealCheck(counted, verdict)


async def check_real_answer(reference: ChuteReference, prompt: BenchPrompt, text: str,
                            claimed: int, rng: random.Random | None = None) -> RealCheck:
    """Run the checks of the module doc on one answer (in a worker thread)."""
    return await asyncio.to_thread(_check, reference, prompt, text, claimed,
                                   rng or random.SystemRandom())
