"""The OpenAI-compatible upstream backend against a hand-written stand-in on loopback,
for the faults a real engine cannot be made to produce (malformed JSON and SSE, error
chunks, stalls, truncation, oversize bodies). The normal paths run against a real
engine in ``test_upstream_real.py``."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from chutes_subnet.errors import InferenceError
from chutes_subnet.inference import (
    Backend,
    InvalidRequestError,
    OpenAIUpstreamBackend,
    UpstreamError,
    make_backend,
)

CHAT, TEXT, EMBED = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
API_KEY = "sk-upstream-test"


class FakeVLLM:
    """A tiny OpenAI-compatible server; the user message picks its behaviour."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.headers: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post(CHAT, self.handle)
        self.app.router.add_post(TEXT, self.handle)
        self.app.router.add_post(EMBED, self.embed)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeVLLM:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def embed(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append(body)
        if body["input"] == "no-data":
            return web.json_response({"object": "list", "model": body["model"]})
        return web.json_response({
            "object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2}})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(body)
        self.headers.append(dict(request.headers))
        mode = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        words = ["Hello", " from", " the", " TEE", " ✓"]
        if mode == "http500":
            return web.json_response({"error": {"message": "plaintext-secret"}}, status=500)
        if mode == "http400":
            return web.json_response({"error": {"message": "bad"}}, status=400)
        if mode == "slow":
            await asyncio.sleep(1.0)
        if not body.get("stream"):
            if mode == "badjson":
                return web.Response(text="{not json", content_type="application/json")
            if mode == "list":
                return web.json_response([1, 2])
            if mode == "huge":
                return web.json_response({"choices": [], "pad": "x" * 5000})
            return web.json_response({
                "id": "cmpl-up", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(words)}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(obj) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj)
            await resp.write(f"data: {data}\n\n".encode())

        for i, word in enumerate(words):
            if mode == "badsse" and i == 2:
                await send("{broken json")
            if mode == "errchunk" and i == 2:
                await send({"error": {"message": "plaintext-secret", "code": 500}})
            if mode == "stall" and i == 2:
                await asyncio.sleep(1.0)
            if mode == "cut" and i == 2:
                return resp  # connection ends mid-answer: no finish_reason, no [DONE]
            await send({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                        "model": body["model"], "usage": None,
                        "choices": [{"index": 0, "delta": {"content": word},
                                     "finish_reason": "stop" if i == 4 else None}]})
        if mode != "nousage":
            await send({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                        "model": body["model"], "choices": [],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})
        if mode != "nodone":
            await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture
async def server():
    fake = await FakeVLLM().start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def backend(server):
    b = make_backend("openai", base_url=server.url, model_id="tiny",
                     upstream_model="org/real-model", api_key=API_KEY, timeout=10.0,
                     read_timeout=0.5, connect_timeout=1.0)
    try:
        yield b
    finally:
        await b.aclose()


def _chat(content: str, **extra) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **extra}


async def test_complete_forwards_and_relabels(server, backend):
    assert isinstance(backend, Backend)
    resp = await backend.complete(CHAT, _chat("ok", stream=True, stream_options={"x": 1}))
    assert resp["choices"][0]["message"]["content"] == "Hello from the TEE ✓"
    assert resp["model"] == "tiny" and resp["usage"]["total_tokens"] == 8
    sent = server.seen[-1]
    assert sent["model"] == "org/real-model" and sent["stream"] is False
    assert "stream_options" not in sent
    assert server.headers[-1]["Authorization"] == f"Bearer {API_KEY}"


async def test_stream_yields_chunks_then_usage(server, backend):
    chunks = [c async for c in backend.stream(CHAT, _chat("ok"))]
    *tokens, last = chunks
    assert "".join(c["choices"][0]["delta"]["content"] for c in tokens) == "Hello from the TEE ✓"
    assert tokens[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in tokens) and all(c["model"] == "tiny" for c in chunks)
    assert last == {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "tiny",
                    "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5,
                                             "total_tokens": 8}}
    sent = server.seen[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_missing_usage_is_estimated(backend):
    chunks = [c async for c in backend.stream(CHAT, _chat("nousage"))]
    assert chunks[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 5, "total_tokens": 5}


@pytest.mark.parametrize("status", [500, 400])
async def test_http_errors_carry_status_but_not_the_body(backend, status):
    for call in (backend.complete(CHAT, _chat(f"http{status}")),
                 _drain(backend.stream(CHAT, _chat(f"http{status}")))):
        with pytest.raises(UpstreamError, match=f"HTTP {status}") as info:
            await call
        assert info.value.status == status
        assert "plaintext-secret" not in str(info.value)


async def _drain(stream) -> list:
    return [c async for c in stream]


@pytest.mark.parametrize(("mode", "message"), [
    ("badjson", "malformed JSON"), ("list", "not an object"), ("huge", "size limit")])
async def test_bad_non_stream_bodies(server, mode, message):
    b = OpenAIUpstreamBackend(url=server.url, max_response_bytes=2048)
    try:
        with pytest.raises(UpstreamError, match=message):
            await b.complete(CHAT, _chat(mode))
    finally:
        await b.aclose()


@pytest.mark.parametrize(("mode", "message"), [
    ("badsse", "malformed JSON"),
    ("errchunk", "error in the stream"),
    ("cut", "before \\[DONE\\] or finish_reason"),
])
async def test_bad_streams(backend, mode, message):
    with pytest.raises(UpstreamError, match=message) as info:
        await _drain(backend.stream(CHAT, _chat(mode)))
    assert "plaintext-secret" not in str(info.value)


async def test_finished_stream_without_done_is_complete(backend):
    """Engines such as ``transformers serve`` close after the finish_reason chunk."""
    chunks = await _drain(backend.stream(CHAT, _chat("nodone")))
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks[:-1]) == \
        "Hello from the TEE ✓"
    assert chunks[-1]["usage"]["completion_tokens"] == 5


async def test_stream_size_limit(server):
    b = OpenAIUpstreamBackend(url=server.url, max_response_bytes=300)
    try:
        with pytest.raises(UpstreamError, match="size limit"):
            await _drain(b.stream(CHAT, _chat("ok")))
    finally:
        await b.aclose()


async def test_timeouts(backend):
    with pytest.raises(UpstreamError, match="timed out"):
        await backend.complete(CHAT, _chat("slow"))
    got = []
    with pytest.raises(UpstreamError, match="timed out"):
        async for chunk in backend.stream(CHAT, _chat("stall")):
            got.append(chunk)
    assert len(got) == 2  # the stall came after two chunks


async def test_total_timeout(server):
    b = OpenAIUpstreamBackend(url=server.url, timeout=0.3, read_timeout=5.0)
    try:
        with pytest.raises(UpstreamError, match="timed out"):
            await b.complete(CHAT, _chat("slow"))
    finally:
        await b.aclose()


async def test_connection_refused():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = OpenAIUpstreamBackend(url=f"http://127.0.0.1:{port}", connect_timeout=1.0)
    try:
        with pytest.raises(UpstreamError, match="request failed") as info:
            await b.complete(CHAT, _chat("ok"))
        assert isinstance(info.value, InferenceError)
    finally:
        await b.aclose()


async def test_abandoned_stream_closes_cleanly(server, backend):
    stream = backend.stream(CHAT, _chat("ok"))
    first = await stream.__anext__()
    assert first["choices"][0]["delta"]["content"] == "Hello"
    await stream.aclose()
    resp = await backend.complete(CHAT, _chat("ok"))  # the session is still usable
    assert resp["usage"]["completion_tokens"] == 5


async def test_embeddings_pass_through_non_stream(server, backend):
    out = await backend.complete(EMBED, {"input": "hello", "encoding_format": "float"})
    assert out["data"][0]["embedding"] == [0.6, 0.8] and out["model"] == "tiny"
    assert out["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    sent = server.seen[-1]
    assert sent == {"input": "hello", "encoding_format": "float", "model": "org/real-model"}
    with pytest.raises(UpstreamError, match="no data list"):
        await backend.complete(EMBED, {"input": "no-data"})
    with pytest.raises(InvalidRequestError, match="cannot be streamed"):
        backend.stream(EMBED, {"input": "hello"})


async def test_request_validation(backend):
    with pytest.raises(InvalidRequestError, match="unsupported path"):
        await backend.complete("/v1/responses", {"input": "x"})
    with pytest.raises(InvalidRequestError):
        backend.stream(CHAT, "not a dict")  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000", "http://vllm.example.com",
                                 "ftp://127.0.0.1", "127.0.0.1:8000", "http://127.0.0.1/?q=1"])
def test_upstream_url_must_be_loopback_http(url):
    with pytest.raises(ValueError):
        OpenAIUpstreamBackend(url=url)


def test_non_loopback_needs_the_dangerous_switch():
    b = OpenAIUpstreamBackend(url="http://10.0.0.5:8000/", dangerous_allow_non_loopback=True)
    assert b.base_url == "http://10.0.0.5:8000"
    assert OpenAIUpstreamBackend(url="http://[::1]:8000").base_url == "http://[::1]:8000"
    assert API_KEY not in repr(OpenAIUpstreamBackend(url="http://localhost:1", api_key=API_KEY))
