"""Authenticated metering end to end: a hostile host between the TEE and the wire.

A real gateway (uvicorn, loopback) routes to a raw-ASGI miner double that opens the
request with the real e2ee recipes and signs a real receipt with the key its registry
record attests; a ``host`` function then rewrites what leaves the machine, as a miner's
host could. The gateway must bill only verified receipts, answer a non-stream answer
without one as the instance's failure (502 + ``X-E2E-Retry``, benched, never a bare
500), and the client must catch what reaches it.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from chutes_subnet import receipts
from chutes_subnet.client import E2EETransport
from chutes_subnet.e2ee import KeyPair, v2
from chutes_subnet.errors import ReceiptError
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.sse import DONE_EVENT, format_event
from chutes_subnet.wire.call import SealTarget, seal_call
from chutes_subnet.wire.headers import InvokeHeaders
from chutes_subnet.wire.messages import DiscoveredInstance
from chutes_subnet.wire.protocol import INVOKE_PATHS, chute_id_for_model
from tests.gateway_fixtures import record_for, signer_for
from tests.servers import UvicornThread

MODEL = "test/receipts-1"
CHUTE = chute_id_for_model(MODEL)
PROMPT, COMPLETION = 27, 8
ANSWER = {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "eight words of a short honest answer"}}],
          "usage": {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION}}

#: (answer bytes, receipt, raw headers) -> what the host puts on the wire instead
Host = Callable[[bytes, str, list[tuple[bytes, bytes]]], tuple[bytes, str, list[tuple[bytes, bytes]]]]


def _flip_receipt_byte(receipt: str, index: int) -> str:
    raw = bytearray(base64.b64decode(receipt))
    raw[index] ^= 0x40
    return base64.b64encode(bytes(raw)).decode()


def _resign(receipt: str, key: receipts.ReceiptSigner, **changes: int) -> str:
    """The same receipt fields signed by ``key`` (with ``changes``)."""
    raw = base64.b64decode(receipt)
    body = raw[:-64]
    fields = dict(request_binding=body[1:33], answer_sha256=body[33:65],
                  prompt_tokens=int.from_bytes(body[65:69], "big"),
                  completion_tokens=int.from_bytes(body[69:73], "big"),
                  issued_at_ms=int.from_bytes(body[73:81], "big"),
                  instance_id=body[82:].decode())
    fields.update(changes)
    return key.sign(**fields)


def miner_double(kp: KeyPair, host: Host) -> object:
    signer = signer_for(kp)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (msg := await receive())["type"] != "lifespan.shutdown":
                await send({"type": msg["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        inv = InvokeHeaders.parse({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        _, session = v2.open_request(kp, inv.context(), body)
        binding = session.request_binding
        if inv.stream:
            sealer = session.stream_sealer()
            answer = format_event({"e2e": sealer.seal(b'data: {"choices":[]}')})
            answer += format_event({"e2e_final": sealer.finish(ANSWER["usage"])})
        else:
            answer = session.seal_response(ANSWER)
        receipt = signer.sign(request_binding=binding, answer_sha256=hashlib.sha256(answer).digest(),
                              prompt_tokens=PROMPT, completion_tokens=COMPLETION,
                              instance_id=kp.instance_id, issued_at_ms=int(time.time() * 1000))
        headers = [(b"content-type", b"text/event-stream" if inv.stream else b"application/octet-stream"),
                   (b"x-e2e-usage", b'{"prompt_tokens":27,"completion_tokens":8}')]
        answer, receipt, headers = host(answer, receipt, headers)
        if inv.stream:
            out = answer + (receipts.event(receipt) if receipt else b"") + DONE_EVENT
        else:
            out = answer
            if receipt:
                headers.append((b"x-e2e-receipt", receipt.encode("utf-8")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


@dataclass
class Stack:
    gw: str
    secret: str
    key_id: str
    usage: MemoryUsageMeter
    app: object
    kp: KeyPair

    def call(self, *, stream: bool) -> tuple[httpx.Response, object]:
        auth = {"Authorization": f"Bearer {self.secret}"}
        found = httpx.get(f"{self.gw}/e2e/instances/{CHUTE}", headers=auth, timeout=10).json()
        info = DiscoveredInstance.model_validate(found["instances"][0])
        target = SealTarget.from_discovery(info)
        call = seal_call(target, chute_id=CHUTE, nonce=info.nonces[0], path=INVOKE_PATHS[0],
                         stream=stream, payload={"model": MODEL, "messages": []}, version=2,
                         api_key=self.secret)
        return httpx.post(f"{self.gw}/e2e/invoke", headers=call.headers, content=call.body,
                          timeout=10), call

    def billed(self) -> tuple[int, int]:
        t = self.usage.totals(self.key_id)
        return t.prompt_tokens, t.completion_tokens

    def benched(self) -> bool:
        return self.app.state.gateway.balancer.is_benched(self.kp.instance_id)


@pytest.fixture
def stack_for() -> Iterator[Callable[[Host], Stack]]:
    threads: list[UvicornThread] = []

    def make(host: Host) -> Stack:
        kp = KeyPair.generate()
        registry, keys, usage = MemoryInstanceRegistry(), MemoryApiKeyStore(), MemoryUsageMeter()
        secret, key = keys.create("k")
        app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                         keys=keys, usage=usage)
        miner, gw = UvicornThread(miner_double(kp, host)).start(), UvicornThread(app).start()
        threads.extend([miner, gw])
        registry.upsert(record_for(kp, miner.url, chute_id=CHUTE, model=MODEL))
        return Stack(gw.url, secret, key.key_id, usage, app, kp)

    yield make
    for t in threads:
        t.stop()


def honest(answer, receipt, headers):
    return answer, receipt, headers


def test_honest_non_stream_is_billed_from_the_receipt_and_verified_by_the_client(stack_for) -> None:
    s = stack_for(honest)
    r, call = s.call(stream=False)
    assert r.status_code == 200
    rec = call.verify_receipt(r.headers["x-e2e-receipt"], r.content)
    assert (rec.prompt_tokens, rec.completion_tokens) == (PROMPT, COMPLETION) == s.billed()
    assert r.headers["x-e2e-usage"] == '{"prompt_tokens":27,"completion_tokens":8,"total_tokens":35}'
    assert call.open_json(r.content)["choices"][0]["message"]["content"].startswith("eight")


def _usage_header(value: bytes) -> Host:
    def host(answer, receipt, headers):
        return answer, receipt, [h for h in headers if h[0] != b"x-e2e-usage"] + [(b"x-e2e-usage", value)]
    return host


@pytest.mark.parametrize("value", [
    b'{"prompt_tokens": 2, "completion_tokens": 1099511627776}',  # the per-request clamp
    '{"completion_tokens": "\u4e2d"}'.encode(),                    # not Latin-1
    b"\xff\xfe",                                                      # not even UTF-8
])
def test_rewritten_usage_header_is_ignored_only_the_receipt_bills(stack_for, value: bytes) -> None:
    s = stack_for(_usage_header(value))
    r, _ = s.call(stream=False)
    assert r.status_code == 200
    assert s.billed() == (PROMPT, COMPLETION)
    assert r.headers["x-e2e-usage"] == '{"prompt_tokens":27,"completion_tokens":8,"total_tokens":35}'


HOSTILE_NON_STREAM = {
    "usage_rewritten_in_receipt": lambda a, rc, h: (a, _flip_receipt_byte(rc, 70), h),
    "receipt_dropped": lambda a, rc, h: (a, "", h),
    "receipt_by_another_key": lambda a, rc, h: (a, _resign(rc, receipts.ReceiptSigner.generate(),
                                                           completion_tokens=10**6), h),
    "answer_swapped": lambda a, rc, h: (a[:-1] + bytes([a[-1] ^ 1]), rc, h),
    "receipt_not_latin1": lambda a, rc, h: (a, rc[:-4] + "\u4e2d\u6587", h),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_NON_STREAM))
def test_gateway_catches_a_host_rewriting_a_non_stream_answer(stack_for, attack: str) -> None:
    s = stack_for(HOSTILE_NON_STREAM[attack])
    r, _ = s.call(stream=False)
    assert r.status_code == 502, r.text
    assert r.json()["reason"] == "bad_receipt"
    assert r.headers["x-e2e-retry"] == "instance"  # the client fails over
    assert s.billed() == (0, 0)                    # never billed
    assert s.benched()                             # metered as the instance's failure


HOSTILE_STREAM = {
    "usage_rewritten_in_receipt": lambda a, rc, h: (a, _flip_receipt_byte(rc, 70), h),
    "receipt_dropped": lambda a, rc, h: (a, "", h),
    "receipt_by_another_key": lambda a, rc, h: (a, _resign(rc, receipts.ReceiptSigner.generate()), h),
    "answer_changed": lambda a, rc, h: (a.replace(b"\n\n", b"\n\n: comment\n\n", 1), rc, h),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_STREAM))
def test_gateway_and_client_catch_a_host_rewriting_a_stream(stack_for, attack: str) -> None:
    s = stack_for(HOSTILE_STREAM[attack])
    r, call = s.call(stream=True)
    assert r.status_code == 200  # a stream is relayed as it comes
    assert s.billed() == (0, 0) and s.benched()
    decoder = call.stream_decoder()
    with pytest.raises(ReceiptError):
        decoder.feed(r.content)
        decoder.finish()


def test_honest_stream_receipt_is_billed_and_exposed(stack_for) -> None:
    s = stack_for(honest)
    r, call = s.call(stream=True)
    decoder = call.stream_decoder()
    decoder.feed(r.content)
    decoder.finish()
    assert decoder.receipt is not None and decoder.receipt.completion_tokens == COMPLETION
    assert s.billed() == (PROMPT, COMPLETION) and not s.benched()


def test_sdk_client_sees_the_verified_receipt_and_fails_on_a_forged_stream(stack_for) -> None:
    s = stack_for(honest)
    http = httpx.Client(transport=E2EETransport(s.secret, verify="gateway"))
    client = openai.OpenAI(base_url=s.gw + "/v1", api_key=s.secret, http_client=http, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[])
    assert raw.headers["x-e2e-usage"] == '{"prompt_tokens":27,"completion_tokens":8,"total_tokens":35}'
    rec = raw.http_response.extensions["e2e_receipt"]
    assert isinstance(rec, receipts.Receipt) and rec.completion_tokens == COMPLETION
    forged = stack_for(HOSTILE_STREAM["usage_rewritten_in_receipt"])
    http = httpx.Client(transport=E2EETransport(forged.secret, verify="gateway"))
    client = openai.OpenAI(base_url=forged.gw + "/v1", api_key=forged.secret, http_client=http,
                           max_retries=0)
    with pytest.raises(ReceiptError):
        for _ in client.chat.completions.create(model=MODEL, messages=[], stream=True):
            pass
