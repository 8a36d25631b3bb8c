"""Per-key request rate limiting: token buckets, one per API key.

* :class:`RateLimiter` — buckets in process memory. Each replica limits on its own, so
  N replicas let a key through at up to N times its rate. Time is injectable for tests.
* :class:`RedisRateLimiter` — one bucket per key in Redis, updated by one Lua script
  (atomic; the clock is Redis's own ``TIME``, so replicas with skewed clocks agree):
  the rate holds across every replica. If Redis cannot be reached the request is
  refused with 503 (fail closed), never let through unlimited.

Both answer ``await limiter.acquire(key_id, rate, burst) -> RateDecision``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chutes_subnet.errors import StoreUnavailable

__all__ = ["Limiter", "RateDecision", "RateLimiter", "RedisRateLimiter", "open_rate_limiter"]


@dataclass(frozen=True)
class RateDecision:
    """Outcome of :meth:`RateLimiter.check`; ``retry_after`` is in seconds."""

    allowed: bool
    retry_after: float = 0.0


class Limiter(Protocol):
    """What the gateway's admission needs from a rate limiter."""

    async def acquire(self, key_id: str, rate: float | None,
                      burst: int | None = None) -> RateDecision: ...

    async def aclose(self) -> None: ...


def _capacity(rate: float, burst: int | None) -> float:
    return float(burst) if burst else max(1.0, 2.0 * rate)


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """Token buckets keyed by ``key_id``: ``rate`` tokens/s up to ``burst``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._max_keys = max_keys

    def check(self, key_id: str, rate: float | None, burst: int | None = None) -> RateDecision:
        """Take one token for ``key_id``; ``rate=None`` means unlimited."""
        if rate is None:
            return RateDecision(True)
        cap = _capacity(rate, burst)
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # bounded memory; resets are in the caller's favour
            bucket = self._buckets[key_id] = _Bucket(cap, now)
        bucket.tokens = min(cap, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return RateDecision(True)
        return RateDecision(False, retry_after=(1.0 - bucket.tokens) / rate)

    async def acquire(self, key_id: str, rate: float | None,
                      burst: int | None = None) -> RateDecision:
        """:meth:`check`, as the :class:`Limiter` protocol asks."""
        return self.check(key_id, rate, burst)

    async def aclose(self) -> None:
        """Nothing to release."""


# KEYS[1] bucket hash; ARGV rate (tokens/s), capacity. Returns {allowed, retry_after_ms}.
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(b[1])
local stamp = tonumber(b[2])
if tokens == nil or stamp == nil then tokens = cap; stamp = now end
tokens = math.min(cap, tokens + math.max(0, now - stamp) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap * 1000 / rate) + 1000)
return {allowed, wait}
"""


class RedisRateLimiter:
    """Token buckets in Redis shared by every gateway replica."""

    def __init__(self, url_or_client: Any, prefix: str = "chutes:ratelimit:",
                 timeout: float = 2.0) -> None:
        import redis.asyncio as aioredis
        import redis.exceptions

        from chutes_subnet.stores.redis_scripts import RedisAddress, RedisReplyError, ScriptClient

        #: the lean per-request script client when the URL allows it (plain TCP)
        self._scripts: ScriptClient | None = None
        if isinstance(url_or_client, str):
            self._r = aioredis.from_url(url_or_client, socket_timeout=timeout,
                                        socket_connect_timeout=timeout)
            address = RedisAddress.parse(url_or_client)
            if address is not None:
                self._scripts = ScriptClient(address, timeout=timeout)
        else:
            self._r = url_or_client
        self._prefix = prefix
        self._script = self._r.register_script(_TAKE_LUA)
        self._errors = (redis.exceptions.RedisError, OSError, RedisReplyError)

    async def acquire(self, key_id: str, rate: float | None,
                      burst: int | None = None) -> RateDecision:
        """Take one token from ``key_id``'s shared bucket (``rate=None``: unlimited)."""
        if rate is None:
            return RateDecision(True)
        keys, args = [self._prefix + key_id], [repr(float(rate)), repr(_capacity(rate, burst))]
        try:
            if self._scripts is not None:
                reply = await self._scripts.evalsha(_TAKE_LUA, keys, args)
            else:
                reply = await self._script(keys=keys, args=args)
            allowed, wait_ms = reply
        except (*self._errors, TypeError, ValueError) as exc:  # (a reply of the wrong shape)
            raise StoreUnavailable("rate limiter unavailable") from exc
        return RateDecision(bool(allowed), retry_after=int(wait_ms) / 1000.0)

    async def aclose(self) -> None:
        if self._scripts is not None:
            await self._scripts.aclose()
        await self._r.aclose()


def open_rate_limiter(url: str | None) -> Limiter:
    """``None``/``memory://`` (per replica) or ``redis://host:port/db`` (shared)."""
    if not url or url.startswith("memory://"):
        return RateLimiter()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisRateLimiter(url)
    raise ValueError(f"unsupported rate limiter URL scheme: {url.split(':', 1)[0]!r}")
