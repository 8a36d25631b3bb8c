"""``POST /e2e/invoke``: admit, consume the nonce, relay ciphertext, bill verified receipts.

A raw ASGI endpoint (no request/response objects) because it is the hot path and
must stream without buffering. The gateway holds no key material: the body and the
response are relayed byte for byte. It bills only what the instance's signed receipt
states (:mod:`chutes_subnet.receipts`), verified with the receipt key bound into the
instance's attestation (from the registry), over the request binding it computes
from what it forwarded and the SHA-256 of the answer bytes it relayed. Order of
checks (first failure answers):

1. API key (401), token quota and rate limit (429 + Retry-After);
2. invoke headers present and well-formed, path allowed, version known (400);
3. body size (413), empty (400 ``empty_body``) or shorter than a KEM ciphertext
   (400 ``bad_envelope``: no receipt could name it);
3b. with a chute registry: the chute is registered, live and (if private) allowed to
   the key, else the unknown-chute 404 (:func:`~.chute_api.check_chute`);
4. the instance is live in the registry and serves the chute (503, retry elsewhere)
   and speaks the requested E2EE version (400);
5. the nonce is consumed atomically for (key, chute, instance): bound elsewhere 403,
   unknown or already used 409, expired 410, store down 503;
6. forward: miner unreachable or 5xx before any byte -> 502 with
   ``X-E2E-Retry: instance`` (the instance is benched for a cooldown); a miner 4xx is
   relayed as is;
7. a 200 non-stream answer is read whole (at most ``max_body_bytes``) and its
   ``X-E2E-Receipt`` verified before any byte is relayed: a missing or invalid receipt,
   an oversized or cut-off body is 502 ``bad_receipt`` / ``miner_error`` with
   ``X-E2E-Retry: instance`` (benched, nothing billed); a 200 stream is relayed chunk by
   chunk and its receipt event verified at the end: without a valid one nothing is
   billed and the instance is benched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
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
from chutes_subnet.errors import EnvelopeFormatError, NonceStoreUnavailable, ReceiptError
from chutes_subnet.gateway.chute_api import check_chute
from chutes_subnet.gateway.journal import JournalEntry
from chutes_subnet.gateway.miners import MinerConnectionError, MinerResponse
from chutes_subnet.gateway.state import GatewayState, off_loop, resolve_signer_headers
from chutes_subnet.nonces import NonceScope
from chutes_subnet.receipts import Receipt, ReceiptTap, request_binding_for
from chutes_subnet.receipts import decode_public_key as decode_receipt_key
from chutes_subnet.receipts import verify as verify_receipt
from chutes_subnet.registry import InstanceRecord
from chutes_subnet.single_use import Use
from chutes_subnet.wire.headers import (
    ENVELOPE_MEDIA_TYPE,
    H_CONTENT_TYPE,
    H_RECEIPT,
    H_RETRY,
    H_RETRY_AFTER,
    H_USAGE,
    H_VERSION,
    RETRY_INSTANCE,
    Usage,
)
from chutes_subnet.wire.protocol import INVOKE_PATH, SUPPORTED_E2EE_VERSIONS

__all__ = ["InvokeEndpoint", "NONCE_REFUSALS"]

log = logging.getLogger("chutes_subnet.gateway.invoke_relay")


#: a refused nonce's :class:`Use` -> (HTTP status, reason code, message)
NONCE_REFUSALS: dict[Use, tuple[int, str, str]] = {
    Use.SCOPE: (403, "nonce_scope", "nonce was issued for another key, chute or instance"),
    Use.UNKNOWN: (409, "nonce_used", "nonce unknown or already used"),
    Use.EXPIRED: (410, "nonce_expired", "nonce expired"),
}

#: Tells the client to pick another instance and re-seal.
_RETRY_ELSEWHERE = {H_RETRY: RETRY_INSTANCE}
_RELAYED_VERSIONS = frozenset(str(v) for v in SUPPORTED_E2EE_VERSIONS)
#: ASGI header names, encoded once
_B_VERSION, _B_RECEIPT, _B_USAGE = (h.lower().encode() for h in (H_VERSION, H_RECEIPT, H_USAGE))
_ENVELOPE_TYPE = ENVELOPE_MEDIA_TYPE.encode()


def _ascii(value: str | None) -> str | None:
    """A header value that may be a receipt (printable ASCII), else None."""
    return value if value is not None and value.isascii() and value.isprintable() else None


def _latin1(value: str | None) -> bytes | None:
    """A header value a miner sent, re-encodable for ASGI, else None (not relayed)."""
    if value is None or not value.isprintable():
        return None
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return None


@functools.lru_cache(maxsize=1024)
def _receipt_key(b64: str) -> bytes | None:
    """The registry's attested receipt key, decoded (None: none or malformed)."""
    try:
        return decode_receipt_key(b64) if b64 else None
    except ValueError:
        return None


class InvokeEndpoint:
    """ASGI app for ``POST /e2e/invoke`` bound to one :class:`GatewayState`."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        #: the invokes counter's child per HTTP status (a labels() lookup costs ~1 us)
        self._invoke_counts: dict[int, Any] = {}

    def _count_invoke(self, status: int) -> None:
        child = self._invoke_counts.get(status)
        if child is None:  # statuses are a small bounded set (HTTP codes this relay sends)
            child = self._invoke_counts[status] = self.state.metrics.invokes.labels(str(status))
        child.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._handle(scope, receive, send)
        except Refusal as exc:
            self.state.metrics.refusals.labels(exc.reason).inc()
            self._count_invoke(exc.status)
            await send_refusal(send, exc)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        st = self.state
        h = request_headers(scope)
        key = await st.admit(h.get("authorization"))
        inv = invoke_headers(h)
        body = await read_body(receive, st.config.max_body_bytes, st.config.body_timeout,
                               declared=h.get("content-length"))
        if not body:
            raise Refusal(400, "empty_body", "empty request envelope")
        chute_id, instance_id, nonce, version = inv.chute_id, inv.instance_id, inv.nonce, inv.version
        try:  # what the instance's receipt must name this request by
            binding = request_binding_for(version, body, inv.context())
        except EnvelopeFormatError:
            raise Refusal(400, "bad_envelope", "request envelope too short") from None

        if st.chutes is not None:
            await check_chute(st, key.key_id, chute_id)
        rec = self._live_instance(chute_id, instance_id)
        if version not in rec.e2e_versions:
            raise Refusal(400, "bad_version", "instance does not support this E2EE version")
        if st.billing is not None:
            await st.admit_payment(key, rec.model)
        try:
            use = await st.nonce_store.consume(nonce, NonceScope(key.key_id, chute_id, instance_id))
        except NonceStoreUnavailable:
            raise Refusal(503, "nonce_store_unavailable", "nonce store unavailable",
                          {H_RETRY_AFTER: "1"}) from None
        if not use.ok:
            raise Refusal(*NONCE_REFUSALS.get(use, NONCE_REFUSALS[Use.UNKNOWN]))
        st.nonce_budget.consumed(key.key_id)

        fwd = inv.to_headers()
        if st.forward_signer is not None:
            fwd.update(await resolve_signer_headers(st.forward_signer, "POST", INVOKE_PATH,
                                                    body, rec.hotkey))
        trace = _Trace(key.key_id, chute_id, instance_id, nonce, version, inv.stream, len(body))
        trace.model = rec.model
        st.shapes.record(len(body), inv.stream, inv.path)
        trace.receipt_key = _receipt_key(rec.receipt_pubkey)
        trace.request_binding = binding
        try:
            await self._forward(rec, fwd, body, trace, receive, send)
        finally:
            st.journal.record(trace.entry())
            if trace.status:
                self._count_invoke(trace.status)

    def _live_instance(self, chute_id: str, instance_id: str) -> InstanceRecord:
        for rec in self.state.registry.list_verified(chute_id):
            if rec.instance_id == instance_id:
                return rec
        raise Refusal(503, "no_instance", "instance not available; discover again",
                      _RETRY_ELSEWHERE)

    async def _forward(self, rec: InstanceRecord, headers: dict[str, str], body: bytes,
                       trace: _Trace, receive: Receive, send: Send) -> None:
        st = self.state
        stream = trace.stream
        st.balancer.acquire(rec.instance_id)
        st.demand.started(trace.chute_id)
        # A stream whose client left is cancelled so the miner stops generating; a
        # non-stream call runs to completion (a watcher task would cost ~5% per request).
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, asyncio.current_task())) \
            if stream else None
        resp: MinerResponse | None = None
        try:
            try:
                resp = await st.miners.post(rec.url.rstrip("/") + INVOKE_PATH, headers, body)
            except MinerConnectionError:
                st.balancer.mark_failed(rec.instance_id)
                trace.status = 502
                raise Refusal(502, "miner_unreachable", "miner unreachable",
                              _RETRY_ELSEWHERE) from None
            trace.status = resp.status
            if resp.status != 200:
                await self._relay_failure(rec, resp, send)
                return
            await self._relay_success(resp, trace, send)
        except asyncio.CancelledError:
            if watcher is not None and watcher.done() and not watcher.cancelled():
                return  # the client went away; nothing left to answer
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            if resp is not None:
                resp.release()
            st.balancer.release(rec.instance_id)
            st.demand.finished(trace.chute_id, trace.prompt_tokens + trace.completion_tokens)

    async def _relay_failure(self, rec: InstanceRecord, resp: MinerResponse,
                             send: Send) -> None:
        if resp.status == 429:  # every slot of the instance busy: demand over capacity
            self.state.demand.refused(rec.chute_id)
        if resp.status >= 500:
            self.state.balancer.mark_failed(rec.instance_id)
            raise Refusal(502, "miner_error", "miner failed before responding",
                          _RETRY_ELSEWHERE)
        try:
            data = await resp.read_bounded(self.state.config.max_error_body_bytes)
        except MinerConnectionError:
            data = b""
        ctype = _latin1(resp.headers.get(H_CONTENT_TYPE)) or _ENVELOPE_TYPE
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(b"content-type", ctype),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    def _check_receipt(self, trace: _Trace, wire: str | None, answer_sha256: bytes) -> Receipt:
        """The answer's verified receipt; else the instance's failure (benched, logged)."""
        try:
            return verify_receipt(wire, trace.receipt_key, request_binding=trace.request_binding,
                                  answer_sha256=answer_sha256, instance_id=trace.instance_id,
                                  now_ms=int(time.time() * 1000))
        except ReceiptError as exc:
            self.state.balancer.mark_failed(trace.instance_id)
            log.warning("instance %s answered without a valid receipt (%s): not billed",
                        trace.instance_id, exc.reason)
            raise

    async def _bill(self, trace: _Trace, receipt: Receipt | None) -> None:
        """Meter and charge exactly the verified receipt's counts (nothing without one)."""
        if receipt is None:
            return
        prompt, completion = receipt.prompt_tokens, receipt.completion_tokens
        trace.prompt_tokens, trace.completion_tokens = prompt, completion
        served = self.state.served
        served[trace.instance_id] = served.get(trace.instance_id, 0) + completion
        meter = self.state.usage
        await off_loop(meter, meter.record, trace.key_id, prompt, completion)
        if self.state.billing is not None:  # billed once per request: its nonce is single-use
            await self.state.charge(trace.key_id, trace.model, prompt, completion,
                                    f"req:{trace.chute_id}:{trace.nonce}")

    def _base_headers(self, resp: MinerResponse) -> list[tuple[bytes, bytes]]:
        out = [(b"content-type",
                _latin1(resp.headers.get(H_CONTENT_TYPE)) or _ENVELOPE_TYPE)]
        version = resp.headers.get(H_VERSION)
        if version in _RELAYED_VERSIONS:
            out.append((_B_VERSION, version.encode()))
        return out

    async def _relay_success(self, resp: MinerResponse, trace: _Trace, send: Send) -> None:
        if trace.stream:
            await self._relay_stream(resp, trace, send)
        else:
            await self._relay_complete(resp, trace, send)

    async def _relay_complete(self, resp: MinerResponse, trace: _Trace, send: Send) -> None:
        """Read the whole answer, verify its receipt, bill it, then relay it."""
        limit = self.state.config.max_body_bytes
        try:
            blob = await resp.read_bounded(limit + 1)
        except MinerConnectionError:
            blob = None
        if blob is None or len(blob) > limit:
            self.state.balancer.mark_failed(trace.instance_id)
            trace.status, trace.interrupted = 502, blob is None
            raise Refusal(502, "miner_error", "miner answer cut off or too large",
                          _RETRY_ELSEWHERE)
        trace.response_bytes = len(blob)
        try:
            receipt = self._check_receipt(trace, _ascii(resp.headers.get(H_RECEIPT)),
                                          hashlib.sha256(blob).digest())
        except ReceiptError as exc:
            trace.status = 502
            raise Refusal(502, "bad_receipt", f"instance answer has no valid receipt ({exc.reason})",
                          _RETRY_ELSEWHERE) from None
        await self._bill(trace, receipt)  # committed before the client has any byte
        headers = [
            *self._base_headers(resp),
            (_B_RECEIPT, receipt.wire.encode("ascii")),
            (_B_USAGE,
             Usage(receipt.prompt_tokens, receipt.completion_tokens).to_header().encode()),
            (b"content-length", str(len(blob)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": blob})

    async def _relay_stream(self, resp: MinerResponse, trace: _Trace, send: Send) -> None:
        """Relay as it comes; verify the receipt event at the end; bill only a valid one."""
        headers = [*self._base_headers(resp), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        tap = ReceiptTap()
        hold = _TailHold(True)
        try:
            async for chunk in resp.iter_chunks():
                tap.feed(chunk)
                trace.response_bytes += len(chunk)
                ready = hold.push(chunk)
                if ready:
                    await send({"type": "http.response.body", "body": ready, "more_body": True})
        except MinerConnectionError:
            # the miner broke off mid-answer (crash, kill, network): stop offering it too
            self.state.balancer.mark_failed(trace.instance_id)
            trace.interrupted = True
            hold.append(b'data: {"e2e_error": "upstream interrupted"}\n\n')
        finally:
            tap.close()
            receipt = None
            if not trace.interrupted:
                with contextlib.suppress(ReceiptError):
                    receipt = self._check_receipt(trace, tap.receipt, tap.answer_sha256)
            # Usage is committed before the client gets the response's last bytes: a
            # replica killed after a client saw a complete answer has billed it.
            await self._bill(trace, receipt)
        await send({"type": "http.response.body", "body": hold.rest()})


#: stream bytes that open the end of an answer (v2 final frame, usage or receipt event, [DONE])
_TAIL_MARKERS = (b'"e2e_final"', b'data: {"usage"', b'{"e2e_receipt"', b"data: [DONE]")
_MAX_HELD = 64 * 1024


class _TailHold:
    """Holds back the end of a response until its usage is committed.

    A client treats an answer as complete only once it has its last bytes: the whole
    body of a non-stream answer (its last chunk is held), the final frame / usage /
    ``[DONE]`` of a stream (held from the first chunk that carries one; chunks before
    it pass at once, so streaming latency is unchanged). A stream is relayed in whole
    SSE events: an event cut by a read boundary waits for its end, so the gateway's own
    closing event (:meth:`append`) never lands inside a half-relayed one. At most
    ``_MAX_HELD`` bytes are held; beyond that they pass through (only a misbehaving
    miner sends more).
    """

    __slots__ = ("_stream", "_held", "_tail", "_partial")

    def __init__(self, stream: bool) -> None:
        self._stream = stream
        self._held = b""
        self._tail = False
        #: stream: the bytes after the last complete event seen so far
        self._partial = b""

    def push(self, chunk: bytes) -> bytes:
        """Bytes that may be sent now (possibly empty)."""
        if not self._stream:
            out, self._held = self._held, chunk
            return out
        chunk, self._partial = _complete_events(self._partial + chunk)
        if len(self._partial) > _MAX_HELD:
            chunk, self._partial = chunk + self._partial, b""
        if not self._tail and not any(m in chunk for m in _TAIL_MARKERS):
            return chunk
        self._tail = True
        self._held += chunk
        if len(self._held) > _MAX_HELD:
            out, self._held = self._held, b""
            return out
        return b""

    def append(self, chunk: bytes) -> None:
        """Hold ``chunk`` whatever it is (the gateway's own closing event); an event the
        miner left unfinished is dropped, as it can never be completed."""
        self._partial = b""
        self._held += chunk

    def rest(self) -> bytes:
        """The held bytes (sent after the usage commit)."""
        out, self._held, self._partial = self._held + self._partial, b"", b""
        return out


def _complete_events(data: bytes) -> tuple[bytes, bytes]:
    """``data`` split after its last SSE event terminator: (whole events, the rest)."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := data.rfind(sep)) >= 0]
    end = max(ends, default=0)
    return data[:end], data[end:]


class _Trace:
    """What this request showed the gateway, filled in as it goes (for the journal)."""

    __slots__ = ("key_id", "chute_id", "instance_id", "nonce", "version", "stream", "request_bytes",
                 "response_bytes", "prompt_tokens", "completion_tokens", "status", "started",
                 "interrupted", "model", "receipt_key", "request_binding")

    def __init__(self, key_id: str, chute_id: str, instance_id: str, nonce: str, version: int,
                 stream: bool, request_bytes: int) -> None:
        self.key_id, self.chute_id, self.instance_id = key_id, chute_id, instance_id
        self.nonce, self.version, self.stream, self.request_bytes = nonce, version, stream, request_bytes
        self.response_bytes = self.prompt_tokens = self.completion_tokens = 0
        self.status = 0
        self.interrupted = False
        self.model = ""
        self.receipt_key: bytes | None = None
        self.request_binding = b""
        self.started = time.monotonic()

    def entry(self) -> JournalEntry:
        return JournalEntry(
            at=time.time(), key_id=self.key_id, chute_id=self.chute_id, instance_id=self.instance_id,
            nonce_prefix=self.nonce[:8], e2e_version=self.version, stream=self.stream,
            request_bytes=self.request_bytes, response_bytes=self.response_bytes,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            status=self.status, duration_ms=round((time.monotonic() - self.started) * 1000, 3),
            interrupted=self.interrupted)


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any] | None) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            if task is not None:
                with contextlib.suppress(RuntimeError):
                    task.cancel()
            return
