"""``POST /e2e/invoke``: decrypt inside the TEE, run the model, encrypt the answer.

A raw ASGI endpoint (the hot path; it streams without buffering and watches for the
caller leaving). Order of checks, first failure answers (``{"error", "reason"}`` JSON):

==== ===================== =====================================================
code reason               when
==== ===================== =====================================================
400  bad_header           missing/malformed X-Chute-Id, X-Instance-Id, X-E2E-Nonce,
                          X-E2E-Stream or X-E2E-Version
400  bad_path             X-E2E-Path is not an invokable path
400  bad_version          X-E2E-Version is not a supported version
413  too_large            body (declared or received) over ``max_body_bytes``
408  body_timeout         body not received within ``body_timeout``
401  unauthenticated      btauth/1 missing, malformed, stale, wrongly signed, replayed
403  forbidden            signer not a validator of this subnet with enough stake
421  misdirected          X-Chute-Id or X-Instance-Id is not this instance
503  draining             the instance is shutting down (Retry-After)
429  busy                 every concurrency slot is taken (Retry-After)
400  bad_envelope         the envelope does not open (format or authentication)
409  replayed             nonce, or the same request ciphertext, already served
                          within the nonce TTL (checked after decryption, so
                          garbage cannot burn a nonce)
400  invalid_request      the backend refused the decrypted request; the message is
                          generic because the detail would be plaintext (except a
                          backend's fixed sentence for an unsupported parameter: n)
504  timeout              no answer within ``request_timeout``
502  upstream_error       the OpenAI-compatible upstream failed
500  inference_error      the model failed
==== ===================== =====================================================

Padded v2 streams coalesce tokens (:mod:`chutes_subnet.miner.coalesce`, window
``stream_coalesce_ms``): the first output chunk goes alone and at once, later ones share
a 512-byte frame when they arrive within the window.

Every answer carries the instance's signed receipt (:mod:`chutes_subnet.receipts`):
the ``X-E2E-Receipt`` header of a 200 non-stream answer, the last event before
``[DONE]`` of a stream, over the exact bytes sent before it. Once a stream has started,
a failure is one ``data: {"e2e_error": "<reason>"}`` event and the stream ends without
a final frame or receipt (the client sees the failure, and in v2 a truncation it can
prove; nothing is billed). Logs carry sizes, timings, status and reason codes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, MutableMapping
from typing import Any

from chutes_subnet.asgi import (
    Receive,
    Refusal,
    Scope,
    Send,
    invoke_headers,
    read_body,
    request_headers,
    send_refusal,
)
from chutes_subnet.auth import ReplayCacheFull
from chutes_subnet.e2ee import RequestContext, dump_json
from chutes_subnet.e2ee.v2 import line_cost
from chutes_subnet.errors import (
    AuthenticationError,
    E2EEError,
    InferenceError,
    PayloadTooLargeError,
    PermissionDenied,
    UsageError,
)
from chutes_subnet.inference import InvalidRequestError, UpstreamError
from chutes_subnet.inference.responses import wants_stream_usage
from chutes_subnet.miner.coalesce import coalesce
from chutes_subnet.miner.envelopes import OpenedRequest, open_envelope, open_plaintext
from chutes_subnet.miner.state import MinerState
from chutes_subnet.receipts import MAX_TOKENS as MAX_RECEIPT_TOKENS
from chutes_subnet.receipts import event as receipt_event
from chutes_subnet.sse import DONE_EVENT, format_event
from chutes_subnet.wire.headers import H_RECEIPT, H_RETRY_AFTER, H_USAGE, Usage, parse_usage

__all__ = ["InvokeEndpoint"]


log = logging.getLogger("chutes_subnet.miner.invoke")




def _target(scope: Scope) -> str:
    query = scope.get("query_string") or b""
    return scope["path"] + ("?" + query.decode("latin-1") if query else "")








#: Request bodies larger than this are opened (decrypted, inflated, parsed) in a worker
#: thread, so one large envelope cannot stall /health and other requests.
_OFF_LOOP_BYTES = 64 * 1024


def safe_cause(exc: BaseException) -> str:
    """The operator-facing cause of a backend failure: the exception class, plus the
    message of an ``UpstreamError`` (built from status codes and class names only, never
    from request or response content)."""
    if isinstance(exc, UpstreamError):
        return f"UpstreamError: {exc}"
    return type(exc).__name__


def _backend_refusal(exc: BaseException) -> Refusal:
    """Map a backend failure (before any byte was sent) to a plaintext-free refusal."""
    log.warning("backend failed before the first byte: %s", safe_cause(exc))
    if isinstance(exc, InvalidRequestError):
        # only a backend's fixed public sentence (e.g. n > 1), never the detail: plaintext
        return Refusal(400, "invalid_request",
                       exc.public or "the model backend rejected the request")
    if isinstance(exc, TimeoutError):
        return Refusal(504, "timeout", "inference timed out")
    if isinstance(exc, UpstreamError):
        if exc.status == 504:
            return Refusal(504, "timeout", "inference timed out")
        return Refusal(502, "upstream_error", "model upstream failed")
    return Refusal(500, "inference_error", "inference failed")


def _stream_error_reason(exc: BaseException) -> str:
    log.warning("backend failed mid-stream: %s", safe_cause(exc))
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, UpstreamError):
        return "upstream_error"
    return "inference_error"


def _usage_counts(usage: Any) -> Usage:
    """The backend's usage as bounded counts (a backend that reports none or garbage: 0)."""
    try:
        return parse_usage(usage)
    except UsageError:
        return Usage()


class InvokeEndpoint:
    """ASGI app for ``POST /e2e/invoke`` (or, with ``plaintext=True``, the bench-only
    ``POST /dangerous/plaintext/invoke`` that skips only the envelope)."""

    def __init__(self, state: MinerState, *, plaintext: bool = False) -> None:
        self.state = state
        self.plaintext = plaintext
        self.route = "plaintext" if plaintext else "invoke"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        began = False

        async def tracked_send(message: MutableMapping[str, Any]) -> None:
            nonlocal began
            began = True
            await send(message)

        try:
            status, detail = await self._handle(scope, receive, tracked_send, started)
        except Refusal as exc:
            self.state.metrics.error(exc.reason)
            await send_refusal(send, exc)
            status, detail = exc.status, exc.reason
        except Exception as exc:  # noqa: BLE001 - last resort: no traceback, no content
            # A traceback could carry request content in an exception message: log the
            # type only, and answer a generic 500 if nothing was sent yet.
            self.state.metrics.error("internal")
            log.error("%s failed unexpectedly: %s", self.route, type(exc).__name__)
            if not began:
                await send_refusal(send, Refusal(500, "internal", "internal error"))
            status, detail = 500, "internal"
        self.state.metrics.requests.labels(self.route, str(status)).inc()
        log.info("%s status=%d detail=%s ms=%.1f", self.route, status, detail,
                 (time.perf_counter() - started) * 1000)

    async def _handle(self, scope: Scope, receive: Receive, send: Send,
                      started: float) -> tuple[int, str]:
        st, cfg = self.state, self.state.config
        h = request_headers(scope)
        inv = invoke_headers(h)
        chute_id, instance_id, nonce, path, stream = (inv.chute_id, inv.instance_id, inv.nonce,
                                                      inv.path, inv.stream)
        version = 1 if self.plaintext else inv.version
        body = await read_body(receive, cfg.max_body_bytes, cfg.body_timeout,
                               declared=h.get("content-length"))

        self._authorize(h, body, _target(scope))
        inst = st.instance
        if chute_id != inst.chute_id or instance_id != inst.instance_id:
            raise Refusal(421, "misdirected", "this instance does not serve that chute/instance id")
        if st.draining:
            raise Refusal(503, "draining", "instance is shutting down",
                          {H_RETRY_AFTER: str(cfg.retry_after)})
        if not st.limiter.try_acquire():
            raise Refusal(429, "busy", "instance at its concurrency limit",
                          {H_RETRY_AFTER: str(cfg.retry_after)})
        st.metrics.in_flight.inc()
        try:
            if len(body) > _OFF_LOOP_BYTES:  # big bodies: decrypt + parse in a thread
                opened = await asyncio.to_thread(self._open, version, inv.context(), body)
            else:
                opened = self._open(version, inv.context(), body)
            if not (st.seen.consume("n:" + nonce).ok and st.seen.consume(opened.replay_id).ok):
                raise Refusal(409, "replayed", "nonce or request already served")
            log.debug("%s opened v%d stream=%s bytes=%d", self.route, version, stream, len(body))
            if stream:
                return await self._stream(opened, path, send, receive, started)
            return await self._complete(opened, path, send, started)
        finally:
            st.metrics.in_flight.dec()
            st.limiter.release()


    def _authorize(self, h: dict[str, str], body: bytes, target: str) -> None:
        gate = self.state.gate
        if gate is None or self.state.config.invoke_auth == "none":
            return
        try:
            gate.authorize(h, body, method="POST", path=target)
        except ReplayCacheFull as exc:
            raise Refusal(503, "busy", str(exc), {"Retry-After": "1"}) from None
        except AuthenticationError as exc:
            raise Refusal(401, "unauthenticated", str(exc)) from None
        except PermissionDenied as exc:
            raise Refusal(403, "forbidden", str(exc)) from None

    def _open(self, version: int, ctx: RequestContext, body: bytes) -> OpenedRequest:
        try:
            if self.plaintext:
                return open_plaintext(body)
            return open_envelope(version, self.state.keypair, ctx, body)
        except PayloadTooLargeError:
            raise Refusal(413, "too_large", "request payload too large") from None
        except E2EEError:
            raise Refusal(400, "bad_envelope", "request envelope could not be opened") from None

    async def _complete(self, opened: OpenedRequest, path: str, send: Send,
                        started: float) -> tuple[int, str]:
        st = self.state
        try:
            result = await asyncio.wait_for(st.backend.complete(path, opened.payload),
                                            st.config.request_timeout)
        except (InferenceError, TimeoutError) as exc:
            raise _backend_refusal(exc) from None
        usage = result.get("usage")
        blob = opened.seal_json(result)
        counts = _usage_counts(usage)
        headers = [(b"content-type", opened.media_type.encode()),
                   (b"content-length", str(len(blob)).encode()),
                   (H_USAGE.lower().encode(), counts.to_header().encode())]
        receipt = self._receipt(opened, hashlib.sha256(blob).digest(), counts)
        if receipt is not None:
            headers.append((H_RECEIPT.lower().encode(), receipt.encode("ascii")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": blob})
        self._record(*counts, started, None, "complete")
        return 200, f"bytes={len(blob)}"

    async def _stream(self, opened: OpenedRequest, path: str, send: Send, receive: Receive,
                      started: float) -> tuple[int, str]:
        st = self.state
        deadline = asyncio.get_running_loop().time() + st.config.request_timeout
        try:
            async with asyncio.timeout_at(deadline):
                chunks = st.backend.stream(path, opened.payload)
                first = await anext(chunks)
        except StopAsyncIteration:
            raise Refusal(502, "upstream_error", "model produced no output") from None
        except (InferenceError, TimeoutError) as exc:
            raise _backend_refusal(exc) from None
        ttft = time.perf_counter() - started
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"),
                                (b"cache-control", b"no-cache"),
                                (b"x-accel-buffering", b"no")]})
        framer = opened.stream()
        answer = hashlib.sha256()  # every byte before the receipt event, as sent
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        usage: Any = None
        frames = 0
        pending = framer.start()
        keep_usage = wants_stream_usage(opened.payload)

        async def lines() -> AsyncIterator[tuple[bytes, bool]]:
            """(SSE line, carries output) per chunk; keeps the usage aside."""
            nonlocal usage
            async for item in _prepend(first, chunks):
                if item.get("usage"):
                    usage = item["usage"] if keep_usage else item.pop("usage")
                    if not keep_usage and not item.get("choices"):
                        continue  # the usage-only chunk: not asked for (OpenAI default)
                yield b"data: " + dump_json(item), _carries_output(item)

        capacity = framer.coalesce_capacity  # None: one frame per line (v1, unpadded v2)
        window = st.config.stream_coalesce_ms / 1000 if capacity else 0.0
        batches: AsyncGenerator[list[tuple[bytes, bool]], None] = coalesce(
            lines(), window=window, capacity=capacity or 0, cost=_line_cost,
            eager_until=_output_flag)
        try:
            async with asyncio.timeout_at(deadline), contextlib.aclosing(batches):
                async for batch in batches:
                    pending += framer.chunk_lines([line for line, _ in batch])
                    frames += 1
                    answer.update(pending)
                    await send({"type": "http.response.body", "body": pending, "more_body": True})
                    pending = b""
                    if gone.is_set():
                        st.metrics.error("client_gone")
                        return 499, f"client_gone frames={frames}"
        except (InferenceError, TimeoutError) as exc:
            reason = _stream_error_reason(exc)
            st.metrics.error(reason)
            await send({"type": "http.response.body", "more_body": False,
                        "body": format_event({"e2e_error": reason})})
            return 200, f"stream_error={reason} frames={frames}"
        finally:
            watcher.cancel()
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        counts = _usage_counts(usage)
        tail = framer.finish(usage)
        answer.update(tail)
        receipt = self._receipt(opened, answer.digest(), counts)
        if receipt is not None:
            tail += receipt_event(receipt)
        await send({"type": "http.response.body", "body": tail + DONE_EVENT, "more_body": False})
        self._record(*counts, started, ttft, "stream")
        return 200, f"frames={frames}"

    def _receipt(self, opened: OpenedRequest, answer_sha256: bytes, counts: Usage) -> str | None:
        """This instance's signed receipt for an answer (counts clamped to the receipt's range)."""
        signer = self.state.receipt_signer
        if signer is None:
            return None
        return signer.sign(request_binding=opened.request_binding, answer_sha256=answer_sha256,
                           prompt_tokens=min(counts.prompt_tokens, MAX_RECEIPT_TOKENS),
                           completion_tokens=min(counts.completion_tokens, MAX_RECEIPT_TOKENS),
                           instance_id=self.state.instance.instance_id,
                           issued_at_ms=int(time.time() * 1000))

    def _record(self, prompt: int, completion: int, started: float, ttft: float | None,
                mode: str) -> None:
        m = self.state.metrics
        m.usage(prompt, completion)
        elapsed = time.perf_counter() - started
        if ttft is not None:
            m.ttft.labels(mode).observe(ttft)
        if completion > 0 and elapsed > 0:
            m.tokens_per_second.labels(mode).observe(completion / elapsed)


def _carries_output(item: dict[str, Any]) -> bool:
    """Whether a chunk carries model output (text, a tool call, ...), not only a role or
    usage: coalescing starts after the first one, so it never delays the first token."""
    choices = item.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    if choice.get("text"):
        return True
    delta = choice.get("delta")
    return isinstance(delta, dict) and any(v for k, v in delta.items() if k != "role")


def _line_cost(entry: tuple[bytes, bool]) -> int:
    return line_cost(entry[0])


def _output_flag(entry: tuple[bytes, bool]) -> bool:
    return entry[1]


async def _prepend(first: dict[str, Any],
                   rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for item in rest:
        yield item


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            gone.set()
            return
