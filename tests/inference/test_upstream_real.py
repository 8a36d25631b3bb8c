"""The miner's upstream backend against a real third-party engine: ``transformers serve``
on CPU over a tiny Llama model made offline (tests/real_engine.py)."""

from __future__ import annotations

import asyncio

import pytest

from chutes_subnet.inference import OpenAIUpstreamBackend, UpstreamError

CHAT, TEXT = "/v1/chat/completions", "/v1/completions"
NAME = "org/claimed-name"


@pytest.fixture
async def backend(tiny_engine):
    b = OpenAIUpstreamBackend(url=tiny_engine.url, model_id=NAME,
                              upstream_model=tiny_engine.upstream_model, timeout=60.0,
                              read_timeout=30.0)
    try:
        yield b
    finally:
        await b.aclose()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def _chat(content: str, max_tokens: int = 12) -> dict:
    return {"model": NAME, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0}


def _text(content: str, max_tokens: int = 12) -> dict:
    return {"model": NAME, "prompt": content, "max_tokens": max_tokens, "temperature": 0}


async def _drain(stream) -> list[dict]:
    return [c async for c in stream]


def _joined(path: str, chunks: list[dict]) -> str:
    out = []
    for c in chunks:
        for choice in c["choices"]:
            out.append(choice.get("text") or "" if path == TEXT
                       else (choice.get("delta") or {}).get("content") or "")
    return "".join(out)


async def test_chat_non_stream_relabels_and_counts(backend, tokenizer):
    resp = await backend.complete(CHAT, _chat("Hello there", 12))
    text = resp["choices"][0]["message"]["content"]
    assert resp["model"] == NAME and resp["object"] == "chat.completion"
    assert len(text) == 12                      # one character per token, never stopped early
    usage = resp["usage"]
    assert usage["completion_tokens"] == 12 == len(tokenizer.encode(text, add_special_tokens=False))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hello there"}],
                                           add_generation_prompt=True, tokenize=False)
    assert usage["prompt_tokens"] == len(tokenizer.encode(prompt, add_special_tokens=False))


@pytest.mark.parametrize("path", [CHAT, TEXT])
async def test_stream_equals_non_stream_and_ends_with_usage(backend, path):
    body = (_chat if path == CHAT else _text)("Describe the river briefly.", 10)
    whole = await backend.complete(path, body)
    chunks = await _drain(backend.stream(path, body))
    *tokens, last = chunks
    ref = whole["choices"][0]["message"]["content"] if path == CHAT else \
        whole["choices"][0]["text"]
    assert _joined(path, tokens) == ref and len(ref) == 10
    assert all(c["model"] == NAME and "usage" not in c for c in tokens)
    assert last["choices"] == [] and last["model"] == NAME
    assert last["usage"]["completion_tokens"] == 10 == whole["usage"]["completion_tokens"]
    assert any(ch.get("finish_reason") == "length" for c in tokens for ch in c["choices"])


async def test_greedy_answers_repeat(backend):
    first = await backend.complete(TEXT, _text("the kernel", 8))
    second = await backend.complete(TEXT, _text("the kernel", 8))
    assert first["choices"][0]["text"] == second["choices"][0]["text"]


async def test_engine_refusals_become_upstream_errors(tiny_engine):
    wrong = OpenAIUpstreamBackend(url=tiny_engine.url, model_id=NAME,
                                  upstream_model="some/other-model", timeout=30.0)
    try:
        for call in (wrong.complete(CHAT, _chat("x")), _drain(wrong.stream(CHAT, _chat("x")))):
            with pytest.raises(UpstreamError, match="HTTP 400") as info:
                await call
            assert info.value.status == 400 and "other-model" not in str(info.value)
    finally:
        await wrong.aclose()


async def test_malformed_request_is_an_engine_error(backend):
    with pytest.raises(UpstreamError) as info:
        await backend.complete(CHAT, {"messages": "not a list", "max_tokens": 4})
    assert info.value.status is not None and info.value.status >= 400


async def test_abandoned_stream_then_concurrent_requests(backend):
    stream = backend.stream(CHAT, _chat("walk away", 40))
    first = await stream.__anext__()
    assert first["choices"]
    await stream.aclose()                       # the client disconnects mid-answer
    results = await asyncio.gather(*(backend.complete(TEXT, _text(f"q{i}", 4)) for i in range(3)))
    assert all(r["usage"]["completion_tokens"] == 4 for r in results)


async def test_engine_gone_is_an_upstream_error(tiny_model_dir):
    from tests.real_engine import TransformersServe

    server = TransformersServe(tiny_model_dir)      # never started: nothing listens
    b = OpenAIUpstreamBackend(url=server.url, upstream_model=server.upstream_model,
                              connect_timeout=1.0)
    try:
        with pytest.raises(UpstreamError, match="request failed"):
            await b.complete(CHAT, _chat("x"))
    finally:
        await b.aclose()
