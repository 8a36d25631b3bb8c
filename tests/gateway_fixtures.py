"""Test support for gateway/client/proxy tests: a miner double that speaks the E2EE
wire with the real e2ee recipes (until the real miner app is used)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chutes_subnet import receipts
from chutes_subnet.e2ee import KeyPair, v1, v2
from chutes_subnet.receipts import ReceiptSigner
from chutes_subnet.registry import InstanceRecord
from chutes_subnet.sse import DONE_EVENT, format_event
from chutes_subnet.wire.headers import InvokeHeaders

__all__ = ["chat_reply", "echo_miner_app", "named_instance_id", "named_record", "record_for",
           "signer_for"]

#: one key per test instance name; each record's id is derived from its key
_NAMED_KEYS: dict[str, KeyPair] = {}


def chat_reply(payload: dict[str, Any]) -> str:
    msgs = payload.get("messages") or [{"content": payload.get("prompt", "")}]
    return "echo: " + str(msgs[-1].get("content", ""))


def _completion(payload: dict[str, Any], text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0,
            "model": payload.get("model", "m"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": len(text.split()),
                      "total_tokens": 3 + len(text.split())}}


def _chunk_lines(payload: dict[str, Any], text: str) -> list[str]:
    out = []
    for i, word in enumerate(text.split(" ")):
        piece = word if i == 0 else " " + word
        chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0,
                 "model": payload.get("model", "m"),
                 "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        out.append("data: " + json.dumps(chunk))
    return out


_SIGNERS: dict[str, ReceiptSigner] = {}


def signer_for(kp: KeyPair) -> ReceiptSigner:
    """The receipt key of the double holding ``kp`` (what its registry record attests)."""
    return _SIGNERS.setdefault(kp.instance_id, ReceiptSigner.generate())


def echo_miner_app(kp: KeyPair, *, fail_status: int | None = None,
                   seen: list[dict[str, str]] | None = None,
                   chunk_delay: float = 0.0,
                   rewrite: Callable[[bytes, str], tuple[bytes, str]] | None = None,
                   ) -> Starlette:
    """A miner double: decrypts with the real e2ee recipes, echoes the last message and
    signs receipts as the real miner does. ``rewrite(answer, receipt)`` plays a hostile
    host between the TEE and the wire (non-stream answers)."""
    signer = signer_for(kp)

    def sign(binding: bytes, answer_sha256: bytes, usage: dict[str, int]) -> str:
        return signer.sign(request_binding=binding, answer_sha256=answer_sha256,
                           prompt_tokens=usage["prompt_tokens"],
                           completion_tokens=usage["completion_tokens"],
                           instance_id=kp.instance_id, issued_at_ms=int(time.time() * 1000))

    def complete(binding: bytes, blob: bytes, usage: dict[str, int]) -> Response:
        receipt = sign(binding, hashlib.sha256(blob).digest(), usage)
        if rewrite is not None:
            blob, receipt = rewrite(blob, receipt)
        return Response(blob, media_type="application/octet-stream",
                        headers={"X-E2E-Usage": json.dumps(usage), "X-E2E-Receipt": receipt})

    def stream(binding: bytes, events: list[bytes], usage: dict[str, int]) -> StreamingResponse:
        async def gen() -> Any:
            answer = hashlib.sha256()
            for ev in events:
                if chunk_delay:
                    await asyncio.sleep(chunk_delay)
                answer.update(ev)
                yield ev
            yield receipts.event(sign(binding, answer.digest(), usage))
            yield DONE_EVENT
        return StreamingResponse(gen(), media_type="text/event-stream")

    async def invoke(request: Request) -> Response:
        if seen is not None:
            seen.append(dict(request.headers))
        if fail_status is not None:
            return JSONResponse({"error": "boom"}, status_code=fail_status)
        body = await request.body()
        inv = InvokeHeaders.parse(request.headers)
        ctx = inv.context()
        binding = receipts.request_binding_for(inv.version, body, ctx)
        if inv.version == 2:
            payload, session = v2.open_request(kp, ctx, body)
        else:
            payload, response_pk = v1.open_request(kp, body)
        text = chat_reply(payload)
        usage = {"prompt_tokens": 3, "completion_tokens": len(text.split()),
                 "total_tokens": 3 + len(text.split())}
        if not inv.stream:
            blob = session.seal_response(_completion(payload, text)) if inv.version == 2 \
                else v1.seal_response(response_pk, _completion(payload, text))
            return complete(binding, blob, usage)
        lines = _chunk_lines(payload, text)
        if inv.version == 2:
            sealer = session.stream_sealer()
            events = [format_event({"e2e": sealer.seal(line.encode())}) for line in lines]
            events.append(format_event({"e2e_final": sealer.finish(usage)}))
        else:
            sealer1 = v1.StreamSealer(response_pk)
            events = [format_event(sealer1.init_event())]
            events += [format_event(sealer1.seal_line(line)) for line in lines]
            events.append(format_event({"usage": usage}))
        return stream(binding, events, usage)

    return Starlette(routes=[Route("/e2e/invoke", invoke, methods=["POST"])])


def record_for(kp: KeyPair, url: str, *, chute_id: str, model: str,
               score: float = 1.0, ttl: float = 600.0, uid: int = 1, hotkey: str | None = None,
               clock: Callable[[], float] = time.time) -> InstanceRecord:
    """The record a validator writes for ``kp``'s holder (its id derived from the key)."""
    now = clock()
    return InstanceRecord(instance_id=kp.instance_id, chute_id=chute_id, model=model, url=url,
                          hotkey=hotkey or "5F" + kp.instance_id, uid=uid,
                          e2e_pubkey=kp.public_b64, receipt_pubkey=signer_for(kp).public_b64,
                          verified_at=now, expires_at=now + ttl, score=score, simulated=True)


def named_instance_id(name: str) -> str:
    """The instance id of the test instance called ``name`` (one key per name)."""
    return _NAMED_KEYS.setdefault(name, KeyPair.generate()).instance_id


def named_record(name: str, chute: str = "c1", *, expires: float = 100.0, score: float = 1.0,
                 model: str = "m1") -> InstanceRecord:
    """A registry record of the test instance called ``name``, for pure registry and
    balancer tests (no server behind its URL)."""
    kp = _NAMED_KEYS.setdefault(name, KeyPair.generate())
    return InstanceRecord(instance_id=kp.instance_id, chute_id=chute, model=model,
                          url="http://x", hotkey="hk", uid=0, e2e_pubkey=kp.public_b64,
                          verified_at=0.0, expires_at=expires, score=score)
