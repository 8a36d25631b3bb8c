"""The gateway's FastAPI application: discovery, invoke routing, health, usage.

Endpoints (wire shapes in :mod:`chutes_subnet.wire`):

* ``GET /v1/models`` — models with at least one live attested instance (no key needed);
* ``GET /e2e/instances/{chute_id}`` — live instances of a chute, ranked by score and
  load, each with its e2e public key and fresh nonces bound to (caller's key, chute,
  instance);
* ``POST /e2e/invoke`` — see :mod:`chutes_subnet.gateway.invoke_relay`;
* ``POST /e2e/attest/{instance_id}``, ``POST /e2e/collateral`` — a client's own
  challenge relayed to the miner, and Intel collateral from the gateway's cache
  (see :mod:`chutes_subnet.gateway.attest_relay`);
* ``GET /v1/usage`` — the caller's own metered usage;
* ``GET /v1/balance``, ``POST /v1/plans/{plan_id}/buy`` — the caller's prepaid balance,
  deposit address and plan (when the payment gate is on; see docs/billing.md);
* ``GET /health`` (liveness), ``GET /ready`` (readiness), ``GET /metrics`` (Prometheus;
  see :mod:`chutes_subnet.gateway.health`).

The app is given a registry, a nonce store, a key store and a usage meter; it owns
only its HTTP pool to miners. It is given no key material and never decrypts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route

from chutes_subnet.asgi import Refusal
from chutes_subnet.errors import NonceStoreUnavailable, StoreUnavailable
from chutes_subnet.gateway.api_keys import ApiKeyStore
from chutes_subnet.gateway.attest_relay import add_attest_routes
from chutes_subnet.gateway.balancer import LoadBalancer
from chutes_subnet.gateway.chute_api import add_chute_routes, check_chute
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.health import add_health_routes
from chutes_subnet.gateway.invoke_relay import InvokeEndpoint
from chutes_subnet.gateway.journal import Journal, RequestJournal
from chutes_subnet.gateway.miners import MinerClient
from chutes_subnet.gateway.ratelimit import Limiter, RateLimiter
from chutes_subnet.gateway.state import ForwardSigner, GatewayState, off_loop, store_down
from chutes_subnet.gateway.usage import UsageMeter
from chutes_subnet.httpserver import FastPath
from chutes_subnet.nonces import NonceScope
from chutes_subnet.registry import InstanceRegistry
from chutes_subnet.wire.headers import H_STREAM
from chutes_subnet.wire.messages import (
    DiscoveredInstance,
    InstancesResponse,
    ModelCard,
    ModelsResponse,
)

if TYPE_CHECKING:
    from chutes_subnet.billing.gate import BillingGate
    from chutes_subnet.gateway.collateral_cache import GatewayCollateral
    from chutes_subnet.nonces import NonceStore
    from chutes_subnet.registry.chutes import ChuteStore

__all__ = ["create_app"]

_log = logging.getLogger(__name__)

_MAX_CHUTE_ID = 128


def create_app(config: GatewayConfig, *, registry: InstanceRegistry, nonce_store: NonceStore,
               keys: ApiKeyStore, usage: UsageMeter,
               forward_signer: ForwardSigner | None = None,
               journal: Journal | None = None, limiter: Limiter | None = None,
               billing: BillingGate | None = None,
               collateral: GatewayCollateral | None = None,
               chutes: ChuteStore | None = None) -> FastAPI:
    """Build one gateway replica around the given stores.

    ``forward_signer(method, path, body, receiver_hotkey)`` may return extra headers
    (e.g. btauth/1 signed by the validator hotkey) added to every forwarded request
    and relayed challenge. ``journal`` defaults to an in-memory one and ``limiter`` to
    per-replica buckets; replicas that must act as one pass SQL/Redis ones
    (:mod:`chutes_subnet.stores`). ``billing`` turns the payment gate on: 402 without
    balance or plan, every answer debited. ``collateral`` serves Intel DCAP collateral
    to clients (``POST /e2e/collateral``); without it clients need their own PCCS.
    ``chutes`` turns the chute registry on (:mod:`.chute_api`): only registered, live
    chutes are discovered, attested through and invoked, private ones only by their
    allowlist.
    """
    state = GatewayState(
        config=config, registry=registry, nonce_store=nonce_store, keys=keys, usage=usage,
        forward_signer=forward_signer, billing=billing, chutes=chutes,
        journal=journal if journal is not None else RequestJournal(),
        limiter=limiter if limiter is not None else RateLimiter(),
        balancer=LoadBalancer(cooldown=config.failure_cooldown),
        miners=MinerClient(connect_timeout=config.connect_timeout,
                           read_timeout=config.read_timeout,
                           max_connections=config.upstream_connections),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        flusher = asyncio.create_task(_flush_forever(state, config.usage_flush_interval))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await state.miners.aclose()
            await _flush(state)

    app = _GatewayApp(InvokeEndpoint(state), title="chutes-subnet gateway",
                      lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = state

    @app.exception_handler(Refusal)
    async def _refusal(_request: Request, exc: Refusal) -> Response:
        state.metrics.refusals.labels(exc.reason).inc()
        return JSONResponse({"error": exc.message, "reason": exc.reason},
                            status_code=exc.status, headers=exc.headers)

    add_attest_routes(app, state, collateral)
    add_health_routes(app, state, state.metrics)
    add_chute_routes(app, state)

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        models = registry.models()
        if chutes is not None:  # registered, live and (private ones) allowed to the caller
            key_id = await _optional_key_id(state, request)
            allowed = {c.chute_id for c in await asyncio.to_thread(chutes.all)
                       if not c.retired and c.visible_to(key_id)}
            models = [(m, c) for m, c in models if c in allowed]
        cards = [ModelCard(id=m, chute_id=c) for m, c in models]
        return ModelsResponse(data=cards).model_dump()

    @app.get("/e2e/instances/{chute_id}")
    async def instances(chute_id: str, request: Request) -> dict[str, Any]:
        key = await state.admit(request.headers.get("authorization"), check_quota=False)
        await state.throttle(f"discover:{key.key_id}", config.discovery_rate,
                             config.discovery_burst, "discovery_rate_limited",
                             "discovery rate limit exceeded")
        if len(chute_id) > _MAX_CHUTE_ID:
            raise Refusal(400, "bad_chute", "malformed chute id")
        await check_chute(state, key.key_id, chute_id)
        live = registry.list_verified(chute_id)
        if not live:
            if chutes is None and not registry.knows_chute(chute_id):
                raise Refusal(404, "unknown_chute", "no instance has ever served this chute")
            state.demand.refused(chute_id)  # demand without capacity
            raise Refusal(503, "no_instances", "no attested instance serves this chute",
                          {"Retry-After": "5"})
        await state.admit_payment(key, live[0].model)
        ranked = state.balancer.rank(live, config.max_instances)
        wait = state.nonce_budget.reserve(key.key_id, len(ranked) * config.nonces_per_instance)
        if wait is not None:
            raise Refusal(429, "nonce_budget", "too many unused nonces for this key: use or "
                          "let expire the ones already issued", {"Retry-After": str(int(wait))})
        try:
            batches = await asyncio.gather(*(
                nonce_store.issue(NonceScope(key.key_id, chute_id, r.instance_id),
                                  config.nonces_per_instance, config.nonce_ttl_server)
                for r in ranked))
        except NonceStoreUnavailable:
            raise Refusal(503, "nonce_store_unavailable", "nonce store unavailable",
                          {"Retry-After": "1"}) from None
        infos = [DiscoveredInstance(instance_id=r.instance_id, e2e_pubkey=r.e2e_pubkey,
                                    nonces=nonces, e2e_versions=list(r.e2e_versions),
                                    simulated=r.simulated, receipt_pubkey=r.receipt_pubkey)
                 for r, nonces in zip(ranked, batches, strict=True)]
        return InstancesResponse(instances=infos,
                                 nonce_expires_in=config.nonce_ttl_client).model_dump()

    @app.get("/v1/usage")
    async def my_usage(request: Request) -> dict[str, Any]:
        key = await state.admit(request.headers.get("authorization"), check_quota=False)
        try:
            u = await off_loop(usage, usage.totals, key.key_id)
        except StoreUnavailable:
            raise store_down() from None
        return {"key_id": key.key_id, "requests": u.requests,
                "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens, "quota_tokens": key.quota_tokens}

    async def _billing_for(request: Request) -> tuple[Any, BillingGate]:
        key = await state.admit(request.headers.get("authorization"), check_quota=False)
        if state.billing is None:
            raise Refusal(404, "billing_off", "this gateway has no payment gate (no balances)")
        return key, state.billing

    @app.get("/v1/balance")
    async def my_balance(request: Request) -> dict[str, Any]:
        """The caller's balance, deposit address and plan."""
        key, billing = await _billing_for(request)
        return await asyncio.to_thread(billing.status, key.key_id)

    @app.post("/v1/plans/{plan_id}/buy")
    async def buy_plan(plan_id: str, request: Request) -> dict[str, Any]:
        """Buy a plan from the balance; ``Idempotency-Key`` makes a retry safe."""
        from chutes_subnet.billing.ledger import InsufficientBalance

        key, billing = await _billing_for(request)
        idem = request.headers.get("idempotency-key") or os.urandom(12).hex()
        if len(idem) > 128:
            raise Refusal(400, "bad_idempotency_key", "Idempotency-Key longer than 128 characters")
        try:
            sub = await asyncio.to_thread(billing.buy_plan, key.key_id, plan_id[:64],
                                          f"api:{key.key_id}:{idem}")
        except LookupError as exc:
            raise Refusal(404, "unknown_plan", str(exc)) from None
        except InsufficientBalance as exc:
            raise Refusal(402, "payment_required", f"{exc}: top up first") from None
        return {"plan_id": sub.plan_id, "expires_at": sub.expires_at, "quota": sub.quota,
                "period": sub.period}

    @app.get("/v1/requests")
    async def my_requests(request: Request, limit: int = 20) -> dict[str, Any]:
        """What the gateway saw of the caller's recent requests (ids, sizes, usage)."""
        key = await state.admit(request.headers.get("authorization"), check_quota=False)
        try:
            entries = await off_loop(state.journal, state.journal.recent, key.key_id,
                                     max(1, min(limit, 200)))
        except StoreUnavailable:
            raise store_down() from None
        return {"key_id": key.key_id, "requests": [e.to_dict() for e in entries]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "instances": len(registry.list_verified())}

    return app


async def _optional_key_id(state: GatewayState, request: Request) -> str | None:
    """The caller's key id when it sent a valid key (``/v1/models`` needs none)."""
    if request.headers.get("authorization") is None:
        return None
    try:
        return (await state.admit(request.headers.get("authorization"),
                                  check_quota=False)).key_id
    except Refusal:
        return None


_B_STREAM = H_STREAM.lower().encode()


def _not_streaming(headers: dict[bytes, bytes]) -> bool:
    """A non-streaming invoke (streams keep uvicorn's cycle: back-pressure, disconnects)."""
    return headers.get(_B_STREAM, b"").lower() != b"true"


class _GatewayApp(FastAPI):
    """FastAPI with the hot path dispatched first.

    ``POST /e2e/invoke`` goes straight to :class:`InvokeEndpoint` (which answers every
    refusal itself), skipping the router and middleware stack: about a fifth of the
    gateway's CPU per routed request. A plain non-streaming invoke is also named as the
    server's :class:`~chutes_subnet.httpserver.FastPath` (no uvicorn request cycle).
    Everything else is ordinary FastAPI.
    """

    def __init__(self, invoke: InvokeEndpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._invoke = invoke
        self.router.routes.append(Route("/e2e/invoke", invoke, methods=["POST"]))
        self.fast_path = FastPath(b"POST", b"/e2e/invoke", invoke, _not_streaming)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/e2e/invoke" \
                and scope["method"] == "POST":
            await self._invoke(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _flush(state: GatewayState) -> None:
    """Write buffered usage and journal entries (always in a worker thread: a batch of a
    second's requests is too long a write for the event loop; both stores lock their
    buffers) and refresh the registry's read cache (off the loop for remote stores)."""
    for store in (state.usage, state.journal, state.registry):
        if not hasattr(store, "flush"):
            continue
        try:
            if store is state.registry:
                await off_loop(store, store.flush)
            else:
                await asyncio.to_thread(store.flush)
        except Exception as exc:  # noqa: BLE001 - a failed flush keeps its rows; try again
            _log.warning("flush of %s failed (%s); retrying next interval",
                         type(store).__name__, type(exc).__name__)


async def _flush_forever(state: GatewayState, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await _flush(state)
