"""The embedded backend end to end: responses, streams, usage, EOS, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from chutes_subnet.errors import InferenceError
from chutes_subnet.inference import (
    DEFAULT_MODEL_ID,
    Backend,
    EmbeddedBackend,
    InvalidRequestError,
    make_backend,
    reference_completion,
    run_generation,
)
from chutes_subnet.inference.tokenizer import EOS_ID, VOCAB_SIZE

CHAT, TEXT = "/v1/chat/completions", "/v1/completions"
CHAT_BODY = {"model": DEFAULT_MODEL_ID, "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Explain TDX in one line ✓"}], "max_tokens": 48}
TEXT_BODY = {"prompt": "Once upon a time", "max_tokens": 33, "temperature": 0.9}


@pytest.fixture
async def backend():
    b = make_backend("embedded", seed=1234, device="cpu")
    try:
        yield b
    finally:
        await b.aclose()


def _chunk_text(chunk: dict) -> str:
    choice = chunk["choices"][0]
    return choice["delta"]["content"] if "delta" in choice else choice["text"]


async def test_satisfies_the_backend_protocol(backend):
    assert isinstance(backend, Backend)
    assert backend.model_id == DEFAULT_MODEL_ID


async def test_chat_completion_shape_and_usage(backend):
    resp = await backend.complete(CHAT, CHAT_BODY)
    assert resp["object"] == "chat.completion" and resp["id"].startswith("chatcmpl-")
    assert resp["model"] == DEFAULT_MODEL_ID
    (choice,) = resp["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    prompt = "<|system|>\nYou are terse.\n<|user|>\nExplain TDX in one line ✓\n<|assistant|>\n"
    assert resp["usage"] == {"prompt_tokens": 1 + len(prompt.encode()), "completion_tokens": 48,
                             "total_tokens": 49 + len(prompt.encode())}


@pytest.mark.parametrize(("path", "body"), [(CHAT, CHAT_BODY), (TEXT, TEXT_BODY)])
async def test_stream_equals_non_stream_and_reference(backend, path, body):
    resp = await backend.complete(path, body)
    chunks = [c async for c in backend.stream(path, {**body, "stream": True})]
    *token_chunks, last = chunks
    assert len(token_chunks) == body["max_tokens"]  # one chunk per generated token
    assert last["choices"] == [] and last["usage"] == resp["usage"]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert [c["choices"][0]["finish_reason"] for c in token_chunks] == [None] * (
        len(token_chunks) - 1) + ["length"]
    streamed = "".join(_chunk_text(c) for c in token_chunks)
    full = resp["choices"][0]["message"]["content"] if path == CHAT else resp["choices"][0]["text"]
    assert streamed == full
    assert reference_completion(path, body, seed=1234) == full
    expected_object = "chat.completion.chunk" if path == CHAT else "text_completion"
    assert {c["object"] for c in chunks} == {expected_object}


async def test_first_chat_chunk_carries_the_role(backend):
    chunks = [c async for c in backend.stream(CHAT, {**CHAT_BODY, "max_tokens": 3})]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "role" not in chunks[1]["choices"][0]["delta"]


async def test_output_depends_on_seed_not_on_sampling_params(backend):
    other = EmbeddedBackend(seed=99, device="cpu")
    try:
        a = (await backend.complete(TEXT, TEXT_BODY))["choices"][0]["text"]
        b = (await backend.complete(TEXT, {**TEXT_BODY, "temperature": 0.0, "seed": 5}))
        c = (await other.complete(TEXT, TEXT_BODY))["choices"][0]["text"]
    finally:
        await other.aclose()
    assert a == b["choices"][0]["text"]
    assert a != c
    assert reference_completion(TEXT, TEXT_BODY, seed=99) == c


@pytest.mark.parametrize("max_tokens", [1, 2, 17])
async def test_max_tokens_is_respected(backend, max_tokens):
    resp = await backend.complete(TEXT, {"prompt": "x", "max_tokens": max_tokens})
    assert resp["usage"]["completion_tokens"] == max_tokens
    result = run_generation(TEXT, {"prompt": "x", "max_tokens": max_tokens}, seed=1234)
    assert len(result.token_ids) == max_tokens
    assert resp["choices"][0]["text"] == result.text


async def test_eos_ends_the_answer_and_is_counted(backend):
    # make EOS win once the model has produced four tokens (the network itself is real)
    model = backend._model
    original_forward = model.forward

    def forward(ids, cache=None, start=0):
        logits = original_forward(ids, cache, start)
        if start >= 1 + len(b"abc") + 3:
            logits[..., EOS_ID] = 1e6
        return logits

    model.forward = forward
    try:
        resp = await backend.complete(TEXT, {"prompt": "abc", "max_tokens": 50})
        chunks = [c async for c in backend.stream(TEXT, {"prompt": "abc", "max_tokens": 50})]
    finally:
        del model.forward
    assert resp["choices"][0]["finish_reason"] == "stop"
    assert resp["usage"]["completion_tokens"] == 5  # four bytes + EOS
    assert len(resp["choices"][0]["text"]) <= 4
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 4 + ["stop"]
    assert chunks[-2]["choices"][0]["text"] == ""  # EOS adds no text
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert model.prior.shape == (VOCAB_SIZE,)


async def test_invalid_requests_raise_before_streaming(backend):
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        backend.stream(CHAT, {"messages": CHAT_BODY["messages"], "max_tokens": 10_000})
    with pytest.raises(InvalidRequestError, match="unsupported path"):
        await backend.complete("/v1/responses", {"input": "x"})
    with pytest.raises(InvalidRequestError, match="unsupported path"):
        backend.stream("/v1/embeddings", {"input": "x"})  # embeddings never stream


async def test_event_loop_keeps_running_during_generation(backend):
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.002)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start_ticks = ticks
    await backend.complete(TEXT, {"prompt": "x", "max_tokens": 300})
    stop.set()
    await task
    assert ticks - start_ticks >= 5


async def test_stream_yields_tokens_as_they_are_produced(backend):
    stream = backend.stream(TEXT, {"prompt": "x", "max_tokens": 400})
    started = time.perf_counter()
    await stream.__anext__()
    first = time.perf_counter() - started
    async for _ in stream:
        pass
    total = time.perf_counter() - started
    assert first < total / 4  # the first token did not wait for the whole generation


async def test_abandoned_stream_stops_the_worker(backend):
    stream = backend.stream(TEXT, {"prompt": "x", "max_tokens": 4096})
    got = [await stream.__anext__() for _ in range(3)]
    assert len(got) == 3
    await stream.aclose()
    assert not backend._active
    started = time.perf_counter()
    resp = await backend.complete(TEXT, {"prompt": "y", "max_tokens": 2})
    # had the 4096-token job kept running we would queue behind it for seconds
    assert time.perf_counter() - started < 1.5
    assert resp["usage"]["completion_tokens"] == 2


async def test_cancelled_complete_stops_the_worker(backend):
    task = asyncio.create_task(backend.complete(TEXT, {"prompt": "x", "max_tokens": 4096}))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.perf_counter()
    await backend.complete(TEXT, {"prompt": "y", "max_tokens": 2})
    assert time.perf_counter() - started < 1.5


async def test_requests_are_served_concurrently_without_mixing(backend):
    bodies = [{"prompt": f"prompt number {i}", "max_tokens": 12} for i in range(4)]
    results = await asyncio.gather(*(backend.complete(TEXT, b) for b in bodies))
    for body, resp in zip(bodies, results, strict=True):
        assert resp["choices"][0]["text"] == reference_completion(TEXT, body, seed=1234)


async def test_closed_backend_refuses_work():
    b = EmbeddedBackend(device="cpu")
    stream = b.stream(TEXT, {"prompt": "x", "max_tokens": 4096})
    await stream.__anext__()
    await b.aclose()
    with pytest.raises(InferenceError, match="cancelled"):
        async for _ in stream:
            pass
    with pytest.raises(InferenceError, match="closed"):
        await b.complete(TEXT, {"prompt": "x", "max_tokens": 1})
    with pytest.raises(InferenceError, match="closed"):
        b.stream(TEXT, {"prompt": "x", "max_tokens": 1})
    await b.aclose()  # idempotent


def test_make_backend_validates_kind_and_options():
    with pytest.raises(ValueError, match="unknown backend kind"):
        make_backend("llama.cpp")
    with pytest.raises(TypeError):
        make_backend("embedded", bogus=1)
    with pytest.raises(ValueError, match="torch_threads"):
        make_backend("embedded", torch_threads=0)


async def test_describe_reports_public_model_facts(backend):
    info = backend.describe()
    assert info["seed"] == 1234 and info["backend"] == "embedded"
    assert len(info["weights_sha256"]) == 64
