"""The encrypted benchmark: streamed v2 E2EE requests to an attested key only.

For each prompt: seal a v2 call with :func:`chutes_subnet.wire.call.seal_call` (the
client's own builder) for the key that passed attestation, POST ``/e2e/invoke``
(btauth/1-signed, per-request deadline), and read the answer with the client's
:class:`~chutes_subnet.wire.call.StreamDecoder`: every frame opened in order, the
authenticated final frame required, ``[DONE]`` required. Measured per request: TTFT
(request sent -> first non-empty text), end-to-end output throughput (completion
tokens as the *validator* counts them / (last byte - request sent), so a miner can
neither inflate its usage nor hold back and burst tokens) and success.

Correctness: for the embedded model, ``verify`` prompts are recomputed locally with
:func:`chutes_subnet.inference.run_generation` and must match exactly (text and
completion token count), and no answer may claim more tokens than its bytes (+1 for
EOS), since the model emits one byte per token. For a real model with a
:class:`~.reference.ChuteReference`, every answer's usage is checked against the
validator's own count and ``verify`` prompts are logprob-verified
(:mod:`.real_answers`). Prompts sharing a canary id (greedy, temperature 0) must
return identical text. Every chunk must be a well-formed OpenAI chunk of the invoked
kind and usage may not exceed the requested ``max_tokens``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from chutes_subnet.auth import sign_headers
from chutes_subnet.errors import E2EEError, InferenceError, UsageError
from chutes_subnet.gateway.shapes import RequestShape
from chutes_subnet.inference import run_generation
from chutes_subnet.nonces import new_nonce
from chutes_subnet.sse import DONE
from chutes_subnet.wire.call import SealedCall, SealTarget, StreamDecoder, seal_call
from chutes_subnet.wire.headers import parse_usage
from chutes_subnet.wire.protocol import E2EE_VERSION_V2, INVOKE_PATH, parse_json

from .attestor import AttestedInstance
from .config import BenchmarkConfig
from .failures import EvaluationFailure, from_http_error
from .prompts import BenchPrompt, lengthen, on_path
from .real_answers import check_real_answer
from .reference import ChuteReference
from .results import reason_kind
from .workers import WorkerPool

__all__ = [
    "BenchmarkOutcome",
    "ReferenceCache",
    "RequestSample",
    "StreamedAnswer",
    "run_benchmark",
    "stream_prompt",
]

MAX_STREAM_BYTES = 8 * 1024 * 1024
_MAX_SIZE_STEPS = 12


class BenchHTTP(Protocol):
    """What the benchmark needs of an HTTP client: ``httpx.AsyncClient`` or
    :class:`~.gateway_path.GatewayPath` (the organic path)."""

    def stream(self, method: str, url: str, *, content: bytes,
               headers: dict[str, str]) -> AbstractAsyncContextManager[Any]: ...
_KINDS = {"/v1/chat/completions": "chat.completion.chunk", "/v1/completions": "text_completion"}


@dataclass(frozen=True)
class StreamedAnswer:
    """A decrypted, integrity-checked streamed answer."""

    text: str
    completion_tokens: int
    ttft_s: float | None
    duration_s: float
    #: the prompt as sent (lengthened to an organic size; checks use this one)
    prompt: BenchPrompt | None = None


@dataclass(frozen=True)
class RequestSample:
    """One benchmark request's outcome."""

    ok: bool
    reason: str | None = None
    detail: str = ""
    ttft_s: float | None = None
    tokens_per_s: float = 0.0
    completion_tokens: int = 0
    verified: bool = False


@dataclass(frozen=True)
class BenchmarkOutcome:
    """Aggregate of one miner's benchmark requests."""

    samples: tuple[RequestSample, ...]
    reason: str | None
    detail: str

    @property
    def successes(self) -> int:
        return sum(1 for s in self.samples if s.ok)

    @property
    def verified(self) -> int:
        return sum(1 for s in self.samples if s.ok and s.verified)

    @property
    def tokens_per_s(self) -> float:
        values = [s.tokens_per_s for s in self.samples if s.ok]
        return statistics.median(values) if values else 0.0

    @property
    def ttft_s(self) -> float | None:
        values = [s.ttft_s for s in self.samples if s.ok and s.ttft_s is not None]
        return statistics.median(values) if values else None

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.samples if s.ok)


class ReferenceCache:
    """Local recomputations of embedded-model answers, shared within a round."""

    def __init__(self, seed: int, pool: WorkerPool | None = None) -> None:
        self.seed = seed
        self._pool = pool
        self._done: dict[str, tuple[str, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, path: str, body: dict[str, Any]) -> tuple[str, int]:
        """``(text, completion_tokens)`` the embedded model must answer."""
        canonical = json.dumps(body, sort_keys=True).encode()
        key = hashlib.sha256(path.encode() + b"\0" + canonical).hexdigest()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._done:
                if self._pool is not None:
                    self._done[key] = await self._pool.generate(path, body, self.seed)
                else:
                    result = await asyncio.to_thread(run_generation, path, body, seed=self.seed)
                    self._done[key] = (result.text, result.completion_tokens)
        return self._done[key]


def _chunk_text(path: str, chunk: Any) -> str:
    if not isinstance(chunk, dict) or chunk.get("object") != _KINDS[path]:
        raise EvaluationFailure("bad_response", "stream: chunk is not an OpenAI chunk of this kind")
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise EvaluationFailure("bad_response", "stream: chunk has no choices list")
    if not choices:
        return ""
    first = choices[0]
    if not isinstance(first, dict):
        raise EvaluationFailure("bad_response", "stream: malformed choice")
    if path == "/v1/completions":
        value = first.get("text")
    else:
        value = (first.get("delta") or {}).get("content")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EvaluationFailure("bad_response", "stream: content is not a string")
    return value


def _inner_payload(line: str) -> str:
    """A decrypted chunk is one SSE ``data:`` line of the original stream (the
    ``data:`` prefix is optional)."""
    line = line.strip()
    if line.startswith("data:"):
        line = line[5:].lstrip(" ")
    return line


def _completion_tokens(usage: Any) -> int:
    try:
        return parse_usage(usage).completion_tokens
    except UsageError as exc:
        raise EvaluationFailure("bad_response", f"usage: {exc}") from None


class _Answer:
    """The decrypted stream as read so far: text parts, first-text time, usage."""

    __slots__ = ("clock", "parts", "path", "start", "ttft", "usage_tokens")

    def __init__(self, path: str, clock: Callable[[], float]) -> None:
        self.path, self.clock = path, clock
        self.parts: list[str] = []
        self.usage_tokens: int | None = None
        self.ttft: float | None = None
        self.start = clock()

    def add(self, line: bytes) -> None:
        """One plaintext SSE line of the instance's stream."""
        payload = _inner_payload(line.decode("utf-8"))
        if payload == DONE:
            return
        chunk = parse_json(payload)
        text = _chunk_text(self.path, chunk)
        if text and self.ttft is None:
            self.ttft = self.clock() - self.start
        self.parts.append(text)
        self.note_usage(chunk.get("usage"))

    def note_usage(self, usage: Any) -> None:
        if usage is not None:
            self.usage_tokens = _completion_tokens(usage) or self.usage_tokens


async def _read_stream(resp: httpx.Response, decoder: StreamDecoder, answer: _Answer) -> None:
    received = 0
    async for raw in resp.aiter_raw():
        received += len(raw)
        if received > MAX_STREAM_BYTES:
            raise EvaluationFailure("bad_response", "stream: exceeds the size limit")
        for line in decoder.lines(raw):
            answer.add(line)
        if decoder.error is not None:
            raise EvaluationFailure("bad_response", "stream: miner reported an error")
    for line in decoder.finish_lines():
        answer.add(line)
    if not decoder.done:
        raise EvaluationFailure("bad_response", "stream: ended without [DONE]")
    answer.note_usage(decoder.final_usage)


def _seal_sized(instance: AttestedInstance, prompt: BenchPrompt,
                size: int | None) -> tuple[SealedCall, BenchPrompt]:
    """Seal ``prompt``; with ``size`` (an organic request's sealed size), lengthen its
    text until the envelope is that size (padding buckets make this exact) or larger."""
    # the answer's receipt is checked under the attested key, as the gateway and clients do
    offer = SealTarget(instance.instance_id, instance.e2e_pubkey, (E2EE_VERSION_V2,),
                       instance.receipt_pubkey or None)
    for _ in range(_MAX_SIZE_STEPS):
        call = seal_call(offer, chute_id=instance.chute_id, nonce=new_nonce(),
                         path=prompt.path, stream=True, payload=prompt.body,
                         version=E2EE_VERSION_V2)
        if size is None or len(call.body) >= size:
            break
        body = lengthen(prompt.path, prompt.body, size - len(call.body))
        prompt = BenchPrompt(prompt.path, body, prompt.verify, prompt.canary)
    return call, prompt


async def stream_prompt(http: BenchHTTP, wallet: Any, instance: AttestedInstance,
                        prompt: BenchPrompt, *, timeout: float, size: int | None = None,
                        clock: Callable[[], float] = time.perf_counter) -> StreamedAnswer:
    """Send one prompt encrypted to ``instance`` and read its stream (see module doc).

    ``size``: make the sealed request this many bytes (drawn from organic traffic).
    """
    call, prompt = _seal_sized(instance, prompt, size)
    headers = call.headers | sign_headers(wallet, method="POST", path=INVOKE_PATH,
                                          body=call.body, receiver_ss58=instance.hotkey)
    answer = _Answer(prompt.path, clock)
    try:
        async with asyncio.timeout(timeout):
            async with http.stream("POST", instance.url + INVOKE_PATH, content=call.body,
                                   headers=headers) as resp:
                if resp.status_code != 200:
                    raise EvaluationFailure("bad_response",
                                            f"invoke: miner answered HTTP {resp.status_code}")
                await _read_stream(resp, call.stream_decoder(), answer)
    except TimeoutError as exc:
        raise EvaluationFailure("timeout",
                                f"invoke: no complete answer within {timeout:g}s") from exc
    except httpx.HTTPError as exc:
        raise from_http_error(exc, "invoke") from exc
    except E2EEError as exc:
        name = type(exc).__name__
        raise EvaluationFailure("bad_response",
                                f"stream: integrity/decryption failed ({name})") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise EvaluationFailure("bad_response", "stream: event is not valid JSON/UTF-8") from exc
    duration = clock() - answer.start
    max_tokens = int(prompt.body.get("max_tokens", 0) or 0)
    parts = answer.parts
    tokens = answer.usage_tokens if answer.usage_tokens is not None else sum(1 for p in parts if p)
    if tokens < 0 or (max_tokens and tokens > max_tokens):
        raise EvaluationFailure("bad_response", "usage: completion_tokens exceeds max_tokens")
    return StreamedAnswer("".join(parts), tokens, answer.ttft, duration, prompt)


async def _check(prompt: BenchPrompt, answer: StreamedAnswer, refs: ReferenceCache | None,
                 reference: ChuteReference | None) -> tuple[int, bool]:
    """``(completion tokens as the validator counts them, verified)`` or a failure."""
    if reference is not None:
        found = await check_real_answer(reference, prompt, answer.text, answer.completion_tokens)
        return found.counted_tokens, found.verdict is not None
    if refs is None:  # no tokenizer for this chute: only the canary checks it
        return answer.completion_tokens, False
    return answer.completion_tokens, await _check_embedded(prompt, answer, refs)


def _stop_bytes(prompt: BenchPrompt) -> int:
    """The longest ``stop`` sequence of a prompt, in UTF-8 bytes (0 without one)."""
    stop = prompt.body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    return max((len(s.encode("utf-8")) for s in stops if isinstance(s, str)), default=0)


async def _check_embedded(prompt: BenchPrompt, answer: StreamedAnswer,
                          refs: ReferenceCache) -> bool:
    # the embedded model emits one byte per token (plus at most one EOS, or the bytes of
    # the stop sequence it cut off): a larger count would inflate throughput on answers
    # that are not recomputed
    if answer.completion_tokens > len(answer.text.encode("utf-8")) + 1 + _stop_bytes(prompt):
        raise EvaluationFailure("wrong_output", "usage claims more tokens than the answer holds")
    if not prompt.verify:
        return False
    try:
        text, tokens = await refs.get(prompt.path, prompt.body)
    except InferenceError as exc:  # our own prompt cannot be recomputed: a validator bug
        raise RuntimeError("benchmark prompt could not be recomputed locally") from exc
    if text != answer.text or tokens != answer.completion_tokens:
        raise EvaluationFailure("wrong_output",
                                "answer differs from the local recomputation of the embedded model")
    return True


async def run_benchmark(http: BenchHTTP, wallet: Any, instance: AttestedInstance,
                        prompts: list[BenchPrompt], config: BenchmarkConfig, *,
                        timeout: float, refs: ReferenceCache | None,
                        reference: ChuteReference | None = None,
                        shapes: Sequence[RequestShape | None] = ()) -> BenchmarkOutcome:
    """Run ``prompts`` one after the other against ``instance``.

    ``refs`` recomputes embedded-model answers; ``reference`` counts and scores a real
    model's answers (:mod:`.real_answers`); ``shapes[i]`` is the organic request whose
    path and sealed size prompt ``i`` takes (prompts of one canary share the first's).
    Stops early after a timeout or an unreachable miner (the rest count as failed, so
    one stalled miner costs about one timeout) and at the first wrong answer.
    """
    del config  # the prompts already carry every benchmark parameter
    samples: list[RequestSample] = []
    canaries: dict[int, str] = {}
    reason: str | None = None
    detail = ""
    canary_shapes: dict[int, RequestShape | None] = {}
    for i, prompt in enumerate(prompts):
        shape = shapes[i] if i < len(shapes) else None
        if prompt.canary is not None:
            shape = canary_shapes.setdefault(prompt.canary, shape)
        size = None
        if shape is not None:
            prompt, size = on_path(prompt, shape.path), shape.request_bytes
        try:
            answer = await stream_prompt(http, wallet, instance, prompt, timeout=timeout,
                                         size=size)
            tokens, verified = await _check(answer.prompt or prompt, answer, refs, reference)
            if prompt.canary is not None:
                seen = canaries.setdefault(prompt.canary, answer.text)
                if seen != answer.text:
                    raise EvaluationFailure("wrong_output",
                                            "greedy canary answered differently twice")
                verified = True
        except EvaluationFailure as failure:
            samples.append(RequestSample(False, failure.reason, failure.detail))
            reason, detail = failure.reason, failure.detail
            if reason_kind(failure.reason) == "wrong_output":
                return BenchmarkOutcome(tuple(samples), reason, detail)
            if failure.reason in ("timeout", "unreachable"):
                rest = len(prompts) - i - 1
                samples.extend(RequestSample(False, "skipped", "not sent") for _ in range(rest))
                break
            continue
        span = max(answer.duration_s, 1e-3)
        samples.append(RequestSample(True, ttft_s=answer.ttft_s, tokens_per_s=tokens / span,
                                     completion_tokens=tokens, verified=verified))
    outcome = BenchmarkOutcome(tuple(samples), None, detail)
    if outcome.successes == 0:
        return BenchmarkOutcome(tuple(samples), reason or "bad_response",
                                detail or "no request succeeded")
    return outcome
