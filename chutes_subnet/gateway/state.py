"""Everything one gateway replica holds, shared by its endpoints, plus the admission
checks common to them (API key, quota, rate limit) and error responses."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from chutes_subnet.asgi import Refusal
from chutes_subnet.errors import AuthenticationError, StoreUnavailable
from chutes_subnet.gateway.api_keys import ApiKey, ApiKeyStore, parse_bearer
from chutes_subnet.gateway.balancer import LoadBalancer
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.health import GatewayMetrics
from chutes_subnet.gateway.journal import Journal, RequestJournal
from chutes_subnet.gateway.miners import MinerClient
from chutes_subnet.gateway.nonce_budget import NonceBudget
from chutes_subnet.gateway.ratelimit import Limiter, RateLimiter
from chutes_subnet.gateway.shapes import RequestShapes
from chutes_subnet.gateway.usage import UsageMeter
from chutes_subnet.registry import InstanceRegistry
from chutes_subnet.registry.demand import DemandMeter

if TYPE_CHECKING:
    from chutes_subnet.billing.gate import BillingGate
    from chutes_subnet.nonces import NonceStore
    from chutes_subnet.registry.chutes import ChuteStore

__all__ = ["ForwardSigner", "GatewayState", "off_loop", "resolve_signer_headers", "store_down"]

T = TypeVar("T")


#: ``(method, path, body, receiver_hotkey_ss58) -> headers`` (sync or async).
ForwardSigner = Callable[[str, str, bytes, str], "Mapping[str, str] | Awaitable[Mapping[str, str]]"]

#: Retry-After sent when a token quota is exhausted (quotas do not refill by themselves).
QUOTA_RETRY_AFTER_SECONDS = 3600



def store_down() -> Refusal:
    """The refusal when a shared store (database, Redis limiter) is down: fail closed."""
    return Refusal(503, "store_unavailable", "gateway state store unavailable",
                   {"Retry-After": "1"})


def _peek(store: object, arg: str) -> Any:
    """The store's in-memory answer for ``arg`` (``store.peek``), or None."""
    peek = getattr(store, "peek", None)
    return peek(arg) if peek is not None else None


async def off_loop(store: object, fn: Callable[..., T], *args: Any) -> T:
    """Call a store method; in a worker thread when the store may wait on the network
    (``store.blocking``, e.g. PostgreSQL), inline for local stores (memory, SQLite)."""
    if getattr(store, "blocking", False):
        return await asyncio.to_thread(fn, *args)
    return fn(*args)

async def resolve_signer_headers(signer: ForwardSigner | None, method: str, path: str,
                                 body: bytes, hotkey: str) -> Mapping[str, str]:
    """Headers from the optional forward signer (sync or async)."""
    if signer is None:
        return {}
    out = signer(method, path, body, hotkey)
    if inspect.isawaitable(out):
        out = await out
    return out


@dataclass
class GatewayState:
    """Dependencies and counters of one replica."""

    config: GatewayConfig
    registry: InstanceRegistry
    nonce_store: NonceStore
    keys: ApiKeyStore
    usage: UsageMeter
    forward_signer: ForwardSigner | None = None
    limiter: Limiter = field(default_factory=RateLimiter)
    balancer: LoadBalancer = field(default_factory=LoadBalancer)
    miners: MinerClient = field(default_factory=MinerClient)
    journal: Journal = field(default_factory=RequestJournal)
    #: sizes and stream flags of organic requests (the validator's benchmark copies them)
    shapes: RequestShapes = field(default_factory=RequestShapes)
    #: completion tokens served per instance since the last :meth:`take_served`
    served: dict[str, int] = field(default_factory=dict)
    #: the payment gate (None: no balances, every key with quota is served)
    billing: BillingGate | None = None
    #: the chute registry (None: every chute a miner names is open, as before chutes
    #: were deployments); with one, unknown, retired and foreign private chutes are 404
    chutes: ChuteStore | None = None
    #: per-chute demand over a sliding window (feeds the published targets)
    demand: DemandMeter = field(default_factory=DemandMeter)
    #: Prometheus series served at GET /metrics
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    #: live nonces per API key (discovery is refused beyond the config's cap)
    nonce_budget: NonceBudget = field(init=False)

    def __post_init__(self) -> None:
        self.nonce_budget = NonceBudget(self.config.max_live_nonces_per_key,
                                        self.config.nonce_ttl_server)

    def take_served(self) -> dict[str, int]:
        """Organic traffic per instance since the previous call (then reset)."""
        out, self.served = self.served, {}
        return out

    async def admit_payment(self, api_key: ApiKey, model: str) -> None:
        """402 unless the payment gate admits ``api_key`` for ``model`` (no gate: admitted)."""
        if self.billing is None:
            return
        from chutes_subnet.billing.gate import PaymentRequired

        try:
            await asyncio.to_thread(self.billing.admit, api_key.key_id, model)
        except PaymentRequired as exc:
            raise Refusal(402, "payment_required", str(exc)) from None

    async def charge(self, key_id: str, model: str, prompt: int, completion: int,
                     ref: str) -> None:
        """Debit one answer (no gate: nothing), idempotent on ``ref``. Like usage, it is
        committed before the client gets the answer's last bytes; a ledger that cannot
        be written stops the answer there rather than serve it unbilled."""
        if self.billing is not None:
            await asyncio.to_thread(self.billing.charge, key_id, model, prompt, completion, ref)

    async def admit(self, authorization: str | None, *, check_quota: bool = True) -> ApiKey:
        """Authenticate the caller and apply quota and rate limit.

        Raises :class:`Refusal` with 401 (unknown/missing key), 429 (quota, rate) or
        503 (a shared store is down: fail closed).
        """
        try:
            secret = parse_bearer(authorization)
            key = _peek(self.keys, secret) or \
                await off_loop(self.keys, self.keys.authenticate, secret)
            if check_quota and key.quota_tokens is not None:
                used = _peek(self.usage, key.key_id) or \
                    await off_loop(self.usage, self.usage.totals, key.key_id)
                if used.total_tokens >= key.quota_tokens:
                    raise Refusal(429, "quota_exhausted", "token quota exhausted",
                                  {"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)})
            decision = await self.limiter.acquire(key.key_id, key.rate, key.burst)
        except AuthenticationError as exc:
            raise Refusal(401, "unauthorized", str(exc),
                          {"WWW-Authenticate": "Bearer"}) from None
        except StoreUnavailable:
            raise store_down() from None
        if not decision.allowed:
            raise Refusal(429, "rate_limited", "rate limit exceeded",
                          {"Retry-After": str(max(1, math.ceil(decision.retry_after)))})
        return key

    async def throttle(self, bucket: str, rate: float, burst: int, reason: str,
                       message: str) -> None:
        """Take one token from a gateway-set per-key budget (``bucket`` names the route
        and the key), on the replica's limiter (Redis when configured); 429 ``reason``
        with Retry-After past it, 503 when the limiter's store is down."""
        try:
            decision = await self.limiter.acquire(bucket, rate, burst)
        except StoreUnavailable:
            raise store_down() from None
        if not decision.allowed:
            raise Refusal(429, reason, message,
                          {"Retry-After": str(max(1, math.ceil(decision.retry_after)))})
