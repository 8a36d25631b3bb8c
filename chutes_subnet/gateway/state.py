"""Everything one gateway replica holds, shared by its endpoints, plus the admission
checks common to them (API key, quota, rate limit) and error responses."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chutes_subnet.asgi import Refusal
from chutes_subnet.errors import AuthenticationError
from chutes_subnet.gateway.balancer import LoadBalancer
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.journal import RequestJournal
from chutes_subnet.gateway.keys import ApiKey, ApiKeyStore, parse_bearer
from chutes_subnet.gateway.ratelimit import RateLimiter
from chutes_subnet.gateway.registry import InstanceRegistry
from chutes_subnet.gateway.upstream import MinerClient
from chutes_subnet.gateway.usage import UsageMeter

if TYPE_CHECKING:
    from chutes_subnet.nonces import NonceStore

__all__ = ["ForwardSigner", "GatewayState", "resolve_signer_headers"]

#: ``(method, path, body, receiver_hotkey_ss58) -> headers`` (sync or async).
ForwardSigner = Callable[[str, str, bytes, str], "Mapping[str, str] | Awaitable[Mapping[str, str]]"]

#: Retry-After sent when a token quota is exhausted (quotas do not refill by themselves).
QUOTA_RETRY_AFTER_SECONDS = 3600






async def resolve_signer_headers(signer: ForwardSigner | None, method: str, path: str,
                                 body: bytes, hotkey: str) -> Mapping[str, str]:
    """Headers from the optional forward signer (sync or async)."""
    if signer is None:
        return {}
    out = signer(method, path, body, hotkey)
    if inspect.isawaitable(out):
        out = await out
    return out  # type: ignore[return-value]


@dataclass
class GatewayState:
    """Dependencies and counters of one replica."""

    config: GatewayConfig
    registry: InstanceRegistry
    nonce_store: "NonceStore"
    keys: ApiKeyStore
    usage: UsageMeter
    forward_signer: ForwardSigner | None = None
    limiter: RateLimiter = field(default_factory=RateLimiter)
    balancer: LoadBalancer = field(default_factory=LoadBalancer)
    miners: MinerClient = field(default_factory=MinerClient)
    journal: RequestJournal = field(default_factory=RequestJournal)
    #: completion tokens served per instance since the last :meth:`take_served`
    served: dict[str, int] = field(default_factory=dict)

    def take_served(self) -> dict[str, int]:
        """Organic traffic per instance since the previous call (then reset)."""
        out, self.served = self.served, {}
        return out

    def admit(self, authorization: str | None, *, check_quota: bool = True) -> ApiKey:
        """Authenticate the caller and apply quota and rate limit.

        Raises :class:`Refusal` with 401 (unknown/missing key) or 429 (quota, rate).
        """
        try:
            key = self.keys.authenticate(parse_bearer(authorization))
        except AuthenticationError as exc:
            raise Refusal(401, "unauthorized", str(exc),
                          {"WWW-Authenticate": "Bearer"}) from None
        if check_quota and key.quota_tokens is not None:
            if self.usage.totals(key.key_id).total_tokens >= key.quota_tokens:
                raise Refusal(429, "quota_exhausted", "token quota exhausted",
                              {"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)})
        decision = self.limiter.check(key.key_id, key.rate, key.burst)
        if not decision.allowed:
            raise Refusal(429, "rate_limited", "rate limit exceeded",
                          {"Retry-After": str(max(1, math.ceil(decision.retry_after)))})
        return key
