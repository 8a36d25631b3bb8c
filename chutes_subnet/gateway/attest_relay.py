"""Client challenges through the gateway: ``POST /e2e/attest/{instance_id}`` and
``POST /e2e/collateral``, so a client verifies an instance itself (issue "verify
before you send") without reaching miners or Intel directly.

``POST /e2e/attest/{instance_id}``, body ``{"nonce": <64 hex>}`` (the client's own
nonce). Order of checks (first failure answers ``{"error", "reason"}``):

1. API key (401) and the general rate limit (429 ``rate_limited``);
2. the per-key challenge rate limit, ``attest_rate``/s up to ``attest_burst``
   (429 ``attest_rate_limited`` + Retry-After): each relay costs the miner a quote;
3. instance id length (400), body size (413) and shape ``AttestRequest`` (400);
4. the instance is live in the registry and, with a chute registry, its chute is live
   and visible to the key (else the same 404 ``unknown_instance``);
5. at most ``attest_per_instance`` relays in flight per instance (429 ``instance_busy``);
6. relay to the miner's ``POST /attest``, signed like the validator's challenges
   (btauth/1 via the forward signer), within ``attest_timeout`` (504
   ``attest_timeout``); unreachable 502 ``miner_unreachable``; a non-200 answer 502
   ``attest_failed``; over ``MAX_ATTEST_RESPONSE_BYTES`` 502 ``attest_too_large``.
   A 200 answer is relayed byte for byte: the gateway cannot forge it (the quote
   binds the client's nonce), and the client checks everything itself.

``GET /e2e/statements/{instance_id}``: the validator-signed statements vouching for a
live instance's key (at most ``MAX_STATEMENTS``), for ``verify="quorum"`` clients;
the gateway cannot forge them (each is signed by a validator hotkey). Admission: the
API key and the general rate limit; unknown or private-to-others instance 404.

``POST /e2e/collateral``, body = a raw TDX quote: the DCAP collateral for its
platform from the gateway's cached source (Intel-signed; DCAP verifies it); 404
``collateral_not_served`` when the gateway has no collateral source (configuration),
503 ``collateral_unavailable`` + Retry-After when none is valid for the platform right
now (the source failed). Same admission as step 1-2.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from chutes_subnet.asgi import Refusal, read_body
from chutes_subnet.errors import CollateralError
from chutes_subnet.gateway.api_keys import ApiKey
from chutes_subnet.gateway.chute_api import check_chute
from chutes_subnet.gateway.collateral_cache import GatewayCollateral
from chutes_subnet.gateway.miners import MinerConnectionError
from chutes_subnet.gateway.state import GatewayState, resolve_signer_headers
from chutes_subnet.registry import InstanceRecord
from chutes_subnet.wire.messages import AttestRequest
from chutes_subnet.wire.protocol import (
    MAX_ATTEST_BODY_BYTES,
    MAX_ATTEST_RESPONSE_BYTES,
    MAX_STATEMENTS,
)

__all__ = ["COLLATERAL_RETRY_AFTER_S", "MAX_QUOTE_BYTES", "add_attest_routes"]

_MAX_INSTANCE_ID = 128
#: Retry-After (seconds) of a 503 ``collateral_unavailable``
COLLATERAL_RETRY_AFTER_S = 30
#: largest quote accepted at ``POST /e2e/collateral`` (as the verifier's parser bounds it)
MAX_QUOTE_BYTES = 32 * 1024


class _InFlight:
    """Relays in flight per instance, refused past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, instance_id: str) -> Iterator[None]:
        n = self._count.get(instance_id, 0)
        if n >= self.limit:
            raise Refusal(429, "instance_busy", "too many challenges in flight for this instance",
                          {"Retry-After": "1"})
        self._count[instance_id] = n + 1
        try:
            yield
        finally:
            left = self._count[instance_id] - 1
            if left:
                self._count[instance_id] = left
            else:
                del self._count[instance_id]


def _find(state: GatewayState, instance_id: str) -> InstanceRecord:
    rec = state.registry.get(instance_id)
    if rec is None or not rec.is_live(time.time()):
        raise Refusal(404, "unknown_instance", "no live instance has this id")
    return rec


def add_attest_routes(app: FastAPI, state: GatewayState,
                      collateral: GatewayCollateral | None) -> None:
    """Register the challenge relay and the collateral cache on ``app``."""
    cfg = state.config
    in_flight = _InFlight(cfg.attest_per_instance)

    async def admit(request: Request) -> ApiKey:
        key = await state.admit(request.headers.get("authorization"), check_quota=False)
        await state.throttle(f"attest:{key.key_id}", cfg.attest_rate, cfg.attest_burst,
                             "attest_rate_limited", "attestation challenge rate limit exceeded")
        return key

    async def relay(rec: InstanceRecord, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json"}
        headers.update(await resolve_signer_headers(state.forward_signer, "POST", "/attest",
                                                    body, rec.hotkey))
        resp = await state.miners.post(rec.url.rstrip("/") + "/attest", headers, body)
        try:
            raw = await resp.read_bounded(MAX_ATTEST_RESPONSE_BYTES + 1)
        finally:
            resp.release()
        if resp.status != 200:
            raise Refusal(502, "attest_failed", f"the instance answered HTTP {resp.status}")
        if len(raw) > MAX_ATTEST_RESPONSE_BYTES:
            raise Refusal(502, "attest_too_large", "the instance's answer is too large")
        return raw

    @app.post("/e2e/attest/{instance_id}")
    async def attest(instance_id: str, request: Request) -> Response:
        key = await admit(request)
        if not instance_id or len(instance_id) > _MAX_INSTANCE_ID:
            raise Refusal(400, "bad_instance", "malformed instance id")
        raw = await read_body(request.receive, MAX_ATTEST_BODY_BYTES, cfg.body_timeout,
                              declared=request.headers.get("content-length"))
        try:
            challenge = AttestRequest.model_validate_json(raw)
        except ValidationError:
            raise Refusal(400, "bad_request", 'body must be {"nonce": <64 hex digits>}') from None
        rec = _find(state, instance_id)
        try:  # an instance of a private chute is unknown to keys outside its allowlist
            await check_chute(state, key.key_id, rec.chute_id)
        except Refusal:
            raise Refusal(404, "unknown_instance", "no live instance has this id") from None
        body = challenge.model_dump_json().encode()
        with in_flight.slot(instance_id):
            try:
                async with asyncio.timeout(cfg.attest_timeout):
                    answer = await relay(rec, body)
            except TimeoutError:
                raise Refusal(504, "attest_timeout", "the instance did not answer in time") from None
            except MinerConnectionError:
                raise Refusal(502, "miner_unreachable", "the instance is unreachable") from None
        return Response(answer, media_type="application/json")

    @app.get("/e2e/statements/{instance_id}")
    async def statements(instance_id: str, request: Request) -> Response:
        key = await state.admit(request.headers.get("authorization"), check_quota=False)
        if not instance_id or len(instance_id) > _MAX_INSTANCE_ID:
            raise Refusal(400, "bad_instance", "malformed instance id")
        rec = _find(state, instance_id)
        try:
            await check_chute(state, key.key_id, rec.chute_id)
        except Refusal:
            raise Refusal(404, "unknown_instance", "no live instance has this id") from None
        # relayed as the validators wrote them: each is signed, the client checks them
        body = "[" + ",".join(rec.statements[:MAX_STATEMENTS]) + "]"
        return Response('{"statements":' + body + "}", media_type="application/json")

    @app.post("/e2e/collateral")
    async def collateral_for(request: Request) -> Response:
        await admit(request)
        quote = await read_body(request.receive, MAX_QUOTE_BYTES, cfg.body_timeout,
                                declared=request.headers.get("content-length"))
        if collateral is None:  # a configuration, not a fault: do not retry here
            raise Refusal(404, "collateral_not_served",
                          "this gateway serves no collateral: use your own PCCS")
        try:
            text = await collateral.get_json(quote, int(time.time()))
        except CollateralError:
            raise Refusal(503, "collateral_unavailable", "no valid collateral for this platform",
                          {"Retry-After": str(COLLATERAL_RETRY_AFTER_S)}) from None
        return Response(text, media_type="application/json")
