"""Test support for gateway/client/proxy tests: a miner double that speaks the E2EE
wire with the real e2ee recipes (until the real miner app is used)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chutes_subnet.e2ee import KeyPair, RequestContext, v1, v2
from chutes_subnet.registry import InstanceRecord
from chutes_subnet.sse import DONE_EVENT, format_event

__all__ = ["echo_miner_app", "record_for", "chat_reply"]


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


def echo_miner_app(kp: KeyPair, *, fail_status: int | None = None,
                   seen: list[dict[str, str]] | None = None,
                   chunk_delay: float = 0.0) -> Starlette:
    """A miner double: decrypts with the real e2ee recipes and echoes the last message."""

    async def invoke(request: Request) -> Response:
        if seen is not None:
            seen.append(dict(request.headers))
        if fail_status is not None:
            return JSONResponse({"error": "boom"}, status_code=fail_status)
        body = await request.body()
        h = request.headers
        stream = h.get("x-e2e-stream") == "true"
        usage = None
        if h.get("x-e2e-version") == "2":
            ctx = RequestContext(h["x-chute-id"], h["x-instance-id"], h["x-e2e-nonce"],
                                 h["x-e2e-path"], stream, int(h.get("x-e2e-padding", "0")))
            payload, session = v2.open_request(kp, ctx, body)
            text = chat_reply(payload)
            usage = {"prompt_tokens": 3, "completion_tokens": len(text.split()),
                     "total_tokens": 3 + len(text.split())}
            if not stream:
                return Response(session.seal_response(_completion(payload, text)),
                                media_type="application/octet-stream",
                                headers={"X-E2E-Usage": json.dumps(usage)})
            sealer = session.stream_sealer()

            async def gen2() -> Any:
                for line in _chunk_lines(payload, text):
                    if chunk_delay:
                        await asyncio.sleep(chunk_delay)
                    yield format_event({"e2e": sealer.seal(line.encode())})
                yield format_event({"e2e_final": sealer.finish(usage)})
                yield format_event({"usage": usage})
                yield DONE_EVENT
            return StreamingResponse(gen2(), media_type="text/event-stream")
        payload, response_pk = v1.open_request(kp, body)
        text = chat_reply(payload)
        usage = {"prompt_tokens": 3, "completion_tokens": len(text.split()),
                 "total_tokens": 3 + len(text.split())}
        if not stream:
            return Response(v1.seal_response(response_pk, _completion(payload, text)),
                            media_type="application/octet-stream",
                            headers={"X-E2E-Usage": json.dumps(usage)})
        sealer1 = v1.StreamSealer(response_pk)

        async def gen1() -> Any:
            yield format_event(sealer1.init_event())
            for line in _chunk_lines(payload, text):
                yield format_event(sealer1.seal_line(line))
            yield format_event({"usage": usage})
            yield DONE_EVENT
        return StreamingResponse(gen1(), media_type="text/event-stream")

    return Starlette(routes=[Route("/e2e/invoke", invoke, methods=["POST"])])


def record_for(kp: KeyPair, url: str, *, chute_id: str, model: str,
               score: float = 1.0, ttl: float = 600.0, uid: int = 1, hotkey: str | None = None,
               clock: Callable[[], float] = time.time) -> InstanceRecord:
    """The record a validator writes for ``kp``'s holder (its id derived from the key)."""
    now = clock()
    return InstanceRecord(instance_id=kp.instance_id, chute_id=chute_id, model=model, url=url,
                          hotkey=hotkey or "5F" + kp.instance_id, uid=uid,
                          e2e_pubkey=kp.public_b64,
                          verified_at=now, expires_at=now + ttl, score=score, simulated=True)
