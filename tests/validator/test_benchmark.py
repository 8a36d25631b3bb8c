"""Benchmark stream checks against deliberately broken stand-in miners: integrity, receipts,
usage bounds, canaries, and arbitrary bytes failing cleanly."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet import receipts
from chutes_subnet.asgi import invoke_headers, read_body
from chutes_subnet.e2ee import KeyPair, v2
from chutes_subnet.receipts import ReceiptSigner
from chutes_subnet.sse import format_event
from chutes_subnet.validator import (
    AttestationSummary,
    AttestedInstance,
    BenchmarkConfig,
    BenchPrompt,
    EvaluationFailure,
    miner_prompts,
    stream_prompt,
)
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.validator_fixtures import bench_wallet

SEED = bytes(range(32))
KEY = KeyPair.generate()
MODEL = "some/model"


RECEIPT_SIGNER = ReceiptSigner.generate()


def _instance(receipt_key: bytes = b"") -> AttestedInstance:
    summary = AttestationSummary(True, "inst", chute_id_for_model(MODEL), MODEL, KEY.public_b64,
                                 True, "UpToDate", "p", None, 0, (), 0.0, 1e12)
    return AttestedInstance(1, _hotkey(), "127.0.0.1:9", "inst", chute_id_for_model(MODEL), MODEL,
                            KEY.public_bytes, summary, receipt_pubkey=receipt_key)


def _hotkey() -> str:
    from chutes_subnet.wallets import hotkey_ss58

    return hotkey_ss58(bench_wallet())


def _miner(mode: str):
    """An ASGI stand-in that answers a v2 stream, broken in the way ``mode`` says."""

    async def app(scope, receive, send):
        body = await read_body(receive, 1 << 20)
        h = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if mode == "http500":
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        ctx = invoke_headers(h).context()
        _payload, session = v2.open_request(KEY, ctx, body)
        sealer = session.stream_sealer()
        content = os.urandom(4).hex() if mode == "random" else "hi"
        if h["x-e2e-path"] == "/v1/completions":
            chunk = {"object": "text_completion", "choices": [{"index": 0, "text": content}]}
        else:
            chunk = {"object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": content}}]}
        if mode == "badchunk":
            chunk = {"object": "nope", "choices": []}
        frames = [sealer.seal(("data: " + json.dumps(chunk)).encode()) for _ in range(3)]
        if mode == "tamper":
            raw = bytearray(base64.b64decode(frames[1]))
            raw[0] ^= 1
            frames[1] = base64.b64encode(bytes(raw)).decode()
        if mode == "nonstring":
            frames[0] = 12345
        if mode == "reorder":
            frames[0], frames[1] = frames[1], frames[0]
        claimed = {"overuse": 999, "overclaim": 8}.get(mode, 3)
        usage = {"prompt_tokens": 3, "completion_tokens": claimed}
        out = b"".join(format_event({"e2e": f}) for f in frames)
        if mode != "truncate":
            out += format_event({"e2e_final": sealer.finish(usage)})
        if mode in ("receipt", "forged_receipt"):  # signed by the attested key, or not
            signer = RECEIPT_SIGNER if mode == "receipt" else ReceiptSigner.generate()
            out += receipts.event(signer.sign(
                request_binding=session.request_binding,
                answer_sha256=hashlib.sha256(out).digest(), prompt_tokens=3,
                completion_tokens=claimed, instance_id="inst", issued_at_ms=int(time.time() * 1000)))
        out += b"data: [DONE]\n\n"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": out})

    return app


PROMPT = BenchPrompt("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                              "max_tokens": 8, "stream": True})


async def _run(mode: str, receipt_key: bytes = b""):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_miner(mode))) as client:
        return await stream_prompt(client, bench_wallet(), _instance(receipt_key), PROMPT, timeout=5)


async def test_benchmark_checks_the_receipt_under_the_attested_key():
    answer = await _run("receipt", RECEIPT_SIGNER.public_bytes)
    assert answer.text
    for mode in ("forged_receipt", "honest"):  # another key's receipt, or none at all
        with pytest.raises(EvaluationFailure) as info:
            await _run(mode, RECEIPT_SIGNER.public_bytes)
        assert info.value.reason == "bad_response" and "ReceiptError" in info.value.detail


async def test_honest_stand_in_stream_is_read():
    answer = await _run("ok")
    assert answer.text == "hihihi" and answer.completion_tokens == 3 and answer.ttft_s > 0


@pytest.mark.parametrize("mode,reason,needle", [
    ("http500", "bad_response", "HTTP 500"),
    ("tamper", "bad_response", "integrity"),
    ("reorder", "bad_response", "integrity"),
    ("truncate", "bad_response", "integrity"),
    ("overuse", "bad_response", "max_tokens"),
    ("badchunk", "bad_response", "OpenAI chunk"),
    ("nonstring", "bad_response", ""),
])
async def test_broken_streams_are_rejected(mode, reason, needle):
    with pytest.raises(EvaluationFailure) as info:
        await _run(mode)
    assert info.value.reason == reason and needle in info.value.detail


@pytest.mark.parametrize("mode,expected", [("ok", None), ("random", "wrong_output")])
async def test_upstream_canary_must_repeat(mode, expected):
    from chutes_subnet.validator import run_benchmark

    cfg = BenchmarkConfig(prompts_per_miner=2, max_tokens=8, canary_repeats=2)
    prompts = miner_prompts(SEED, 1, "hk", cfg, embedded=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_miner(mode))) as client:
        outcome = await run_benchmark(client, bench_wallet(), _instance(), prompts, cfg, timeout=5,
                                      refs=None)
    assert outcome.reason == expected
    if expected is None:
        assert outcome.successes == 3 and outcome.verified == 2   # both canary answers
        assert outcome.tokens_per_s > 0 and outcome.ttft_s is not None


async def test_embedded_usage_cannot_exceed_the_answer_bytes():
    from chutes_subnet.validator import ReferenceCache, run_benchmark

    cfg = BenchmarkConfig(prompts_per_miner=1, max_tokens=8, verify_sample=0)
    prompts = [BenchPrompt(PROMPT.path, PROMPT.body, verify=False)]
    refs = ReferenceCache(seed=1)
    for mode, expected in (("ok", None), ("overclaim", "wrong_output")):
        transport = httpx.ASGITransport(app=_miner(mode))
        async with httpx.AsyncClient(transport=transport) as client:
            outcome = await run_benchmark(client, bench_wallet(), _instance(), prompts, cfg,
                                          timeout=5, refs=refs)
        assert outcome.reason == expected, mode


def _raw_app(payload: bytes):
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": payload})

    return app


_EVENTS = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda d: format_event(d), st.dictionaries(
        st.sampled_from(["e2e", "e2e_final", "e2e_error", "usage", "x"]),
        st.one_of(st.text(max_size=40), st.integers(), st.none(), st.lists(st.integers())),
        max_size=2)),
    st.just(b"data: [DONE]\n\n"), st.just(b"data: 5\n\n"))


@settings(max_examples=80, deadline=None)
@given(st.lists(_EVENTS, max_size=6))
async def test_arbitrary_miner_streams_fail_cleanly(events):
    transport = httpx.ASGITransport(app=_raw_app(b"".join(events)))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(EvaluationFailure) as info:
            await stream_prompt(client, bench_wallet(), _instance(), PROMPT, timeout=5)
    assert info.value.reason == "bad_response"


@pytest.mark.parametrize("stop,expected", [(None, "wrong_output"), ("zz", None), (["a", "zz"], None)])
async def test_embedded_usage_bound_allows_the_cut_stop_sequence(stop, expected):
    """An honest answer cut at a stop sequence counts the stop's tokens (OpenAI semantics):
    8 tokens for the 6 bytes "hihihi" fits 6 + EOS + a 2-byte stop, not 6 + EOS."""
    from chutes_subnet.validator import ReferenceCache, run_benchmark

    cfg = BenchmarkConfig(prompts_per_miner=1, max_tokens=8, verify_sample=0)
    body = {**PROMPT.body, **({"stop": stop} if stop is not None else {})}
    prompts = [BenchPrompt(PROMPT.path, body, verify=False)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_miner("overclaim"))) as client:
        outcome = await run_benchmark(client, bench_wallet(), _instance(), prompts, cfg,
                                      timeout=5, refs=ReferenceCache(seed=1))
    assert outcome.reason == expected
