"""``POST /attest``: evidence bound to a validator's fresh nonce, our E2EE key and hotkey.

Order of checks (first failure answers ``{"error", "reason"}``):

1. body size (declared, then received) <= ``MAX_ATTEST_BODY_BYTES`` -> 413;
2. btauth/1 signed for this miner's hotkey, fresh, not replayed -> 401;
   signer holds a validator permit and enough stake -> 403;
3. body is an :class:`~chutes_subnet.wire.messages.AttestRequest` -> 400;
3b. the backend is ready (its ``ready()`` probe, e.g. the upstream engine lists its
   models only once the weights are loaded) -> else 503 ``warming_up``: an instance is
   attested, hence routable, only once its model can answer (cold-start honesty);
4. evidence from the provider, in a worker thread (configfs-tsm and the NVIDIA SDK
   block), one collection at a time (configfs-tsm refuses concurrent writers),
   within ``attest_timeout`` -> 503 on failure or timeout.

The answer is an :class:`~chutes_subnet.wire.messages.AttestResponse`. The TDX quote's
report_data binds the nonce, the E2EE key, the receipt key and the hotkey (layout v2 of
:func:`chutes_subnet.attestation.verify.binding.build_report_data`); the GPU evidence is made for the
same nonce.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import ValidationError

from chutes_subnet.asgi import Receive, Refusal, Scope, Send, read_body, send_refusal
from chutes_subnet.auth import ReplayCacheFull
from chutes_subnet.errors import AttestationError, AuthenticationError, PermissionDenied
from chutes_subnet.miner.state import MinerState
from chutes_subnet.wire.messages import AttestRequest, AttestResponse
from chutes_subnet.wire.protocol import MAX_ATTEST_BODY_BYTES

__all__ = ["AttestEndpoint"]

log = logging.getLogger("chutes_subnet.miner.attest")


class AttestEndpoint:
    """ASGI app for ``POST /attest`` bound to one :class:`MinerState`."""

    def __init__(self, state: MinerState) -> None:
        self.state = state
        self._one_at_a_time = asyncio.Semaphore(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        metrics = self.state.metrics
        try:
            body = await self._handle(scope, receive)
        except Refusal as exc:
            metrics.error(exc.reason)
            metrics.attestations.labels(exc.reason).inc()
            metrics.requests.labels("attest", str(exc.status)).inc()
            log.info("attest status=%d reason=%s", exc.status, exc.reason)
            await send_refusal(send, exc)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        metrics.attestations.labels("ok").inc()
        metrics.requests.labels("attest", "200").inc()
        log.info("attest status=200 bytes=%d ms=%.1f", len(body),
                 (time.perf_counter() - started) * 1000)

    async def _handle(self, scope: Scope, receive: Receive) -> bytes:
        st = self.state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit()
                                     or int(declared) > MAX_ATTEST_BODY_BYTES):
            raise Refusal(413, "too_large", "attest body too large")
        raw = await read_body(receive, MAX_ATTEST_BODY_BYTES, st.config.body_timeout)
        if st.gate is not None:
            try:
                st.gate.authorize(headers, raw, method="POST", path=scope["path"])
            except ReplayCacheFull as exc:
                raise Refusal(503, "busy", str(exc), {"Retry-After": "1"}) from None
            except AuthenticationError as exc:
                raise Refusal(401, "unauthenticated", str(exc)) from None
            except PermissionDenied as exc:
                raise Refusal(403, "forbidden", str(exc)) from None
        try:
            request = AttestRequest.model_validate_json(raw)
        except ValidationError:
            raise Refusal(400, "bad_request", "body must be {\"nonce\": <64 hex digits>}") from None
        nonce = bytes.fromhex(request.nonce)
        probe = getattr(st.backend, "ready", None)
        if probe is not None and not await probe():
            # cold start: no evidence (so no attestation, no routing) before the model loads
            raise Refusal(503, "warming_up", "the model is not loaded yet", {"Retry-After": "10"})
        evidence = await self._collect(nonce)
        inst = st.instance
        response = AttestResponse(
            instance_id=inst.instance_id, chute_id=inst.chute_id, model=inst.model_id,
            hotkey=inst.hotkey, e2e_pubkey=inst.e2e_pubkey, e2e_versions=list(inst.e2e_versions),
            receipt_pubkey=inst.receipt_pubkey or None, **evidence.to_wire())
        return response.model_dump_json().encode()

    async def _collect(self, nonce: bytes) -> Any:
        st = self.state
        try:
            async with asyncio.timeout(st.config.attest_timeout):
                async with self._one_at_a_time:
                    signer = st.receipt_signer
                    return await asyncio.to_thread(
                        st.provider.collect, nonce, st.keypair.public_bytes, st.instance.hotkey,
                        signer.public_bytes if signer is not None else None)
        except TimeoutError:
            raise Refusal(503, "evidence_timeout", "evidence collection timed out",
                          {"Retry-After": "5"}) from None
        except AttestationError as exc:
            log.warning("evidence collection failed: %s", exc)
            raise Refusal(503, "evidence_unavailable", "evidence collection failed",
                          {"Retry-After": "5"}) from None
