"""btauth/1 request authentication between validators and miners.

The signature scheme is bittensor 11's ``bittensor.http_auth`` (hotkey signature over
``btauth/1``, scheme, method, path, sha256(body), ns nonce, sender, receiver). This
module adds what a subnet endpoint needs around it:

:func:`sign_headers`
    validator side: headers for one request, bound to the miner's hotkey.
:class:`ValidatorGate`
    miner side. ``authorize`` checks, in order:

    1. header shape, receiver == this miner, freshness, signature, replay
       (``http_auth.verify``) -> :class:`~chutes_subnet.errors.AuthenticationError`
       (HTTP 401);
    2. the sender is in the current metagraph, holds a validator permit and at least
       ``min_stake`` -> :class:`~chutes_subnet.errors.PermissionDenied` (HTTP 403).

    The replay cache is written only after the signature verifies AND the sender passed
    the permit and stake checks (so a registered non-validator cannot fill it), and is
    bounded in time (``max_age + allowed_skew``) and size; when it is full of live
    entries the request is refused as busy (:class:`ReplayCacheFull`, HTTP 503), never
    as a replay. Error messages name the failed check
    and nothing else, so they are safe to return to an unauthenticated caller.
:class:`MetagraphCache`
    a background task keeping the latest :class:`~chutes_subnet.chain.Metagraph`,
    surviving chain outages by serving the last good snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from bittensor import http_auth

from .chain import Chain, Metagraph, Neuron
from .errors import AuthenticationError, AuthError, ChainError, PermissionDenied
from .single_use import Use

__all__ = [
    "AUTH_HEADERS",
    "sign_headers",
    "forward_signer",
    "hotkey_signer",
    "BoundedNonceStore",
    "ReplayCacheFull",
    "ValidatorGate",
    "MetagraphCache",
]

log = logging.getLogger(__name__)

#: Header names btauth/1 uses (for CORS lists, proxies and logging filters).
AUTH_HEADERS = (
    http_auth.HEADER_VERSION,
    http_auth.HEADER_HOTKEY,
    http_auth.HEADER_RECEIVER,
    http_auth.HEADER_NONCE,
    http_auth.HEADER_CRYPTO,
    http_auth.HEADER_SIGNATURE,
)

_REASONS: dict[type[Exception], str] = {
    http_auth.MalformedAuth: "malformed",
    http_auth.WrongReceiver: "wrong_receiver",
    http_auth.StaleRequest: "stale",
    http_auth.BadSignature: "bad_signature",
    http_auth.ReplayedRequest: "replayed",
}


def sign_headers(
    wallet: Any, *, method: str, path: str, body: bytes, receiver_ss58: str
) -> dict[str, str]:
    """btauth/1 headers signing ``method path body`` for the hotkey ``receiver_ss58``.

    ``path`` must be the request target exactly as sent (with any query string) and
    ``body`` the exact bytes sent. Sign again for every retry: each signature carries
    a fresh nanosecond nonce and is accepted once.
    """
    if not receiver_ss58:
        raise ValueError("receiver_ss58 is required: requests must be bound to a miner")
    return http_auth.sign(
        wallet, method=method, path=path, body=bytes(body), receiver_ss58=receiver_ss58
    )


def hotkey_signer(wallet: Any) -> Any:
    """The hotkey keypair of ``wallet``, loaded once, for signing many requests.

    Signing with a ``bt.Wallet`` reads and decodes its hotkey file on every call
    (about 1.3 ms here); its keypair signs in about 50 µs. Anything that is not a
    ``bt.Wallet`` (a keypair, a custom signer) is returned unchanged.
    """
    import bittensor as bt

    return wallet.hotkey if isinstance(wallet, bt.Wallet) else wallet


def forward_signer(wallet: Any) -> Callable[[str, str, bytes, str], dict[str, str]]:
    """A gateway ``forward_signer``: signs every forwarded request with ``wallet``'s hotkey."""
    signer = hotkey_signer(wallet)

    def sign(method: str, path: str, body: bytes, receiver_ss58: str) -> dict[str, str]:
        return sign_headers(signer, method=method, path=path, body=body, receiver_ss58=receiver_ss58)

    return sign


class ReplayCacheFull(AuthError):
    """The replay cache holds only live entries: retry shortly (HTTP 503, not 401)."""


class _SignatureOnly:
    """A nonce store for ``http_auth.verify`` that records nothing: the gate records
    the nonce itself once the sender is admitted."""

    def __init__(self, retention: float) -> None:
        self.retention = retention

    def check_and_store(self, _hotkey_ss58: str, _nonce_ns: int) -> bool:
        return True


class BoundedNonceStore:
    """Replay cache for btauth/1: remembers ``(hotkey, nonce)`` for ``retention`` s.

    Holds at most ``max_entries``; when full of unexpired entries it refuses new
    ones (the request fails as a replay) rather than forgetting a live nonce, which
    would reopen a replay window. Thread-safe.
    """

    def __init__(self, retention: float = 30.0, max_entries: int = 100_000) -> None:
        if retention <= 0 or max_entries <= 0:
            raise ValueError("retention and max_entries must be positive")
        self.retention = float(retention)
        self.max_entries = int(max_entries)
        self._seen: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def consume(self, token: tuple[str, int]) -> Use:
        """ACCEPTED the first time ``(hotkey, nonce_ns)`` is seen within the retention;
        USED on a replay; FULL when full of live entries (a
        :class:`~chutes_subnet.single_use.SingleUse` recorder)."""
        key = (token[0], int(token[1]))
        now = time.monotonic()
        with self._lock:
            while self._seen:
                oldest_key, expiry = next(iter(self._seen.items()))
                if expiry > now:
                    break
                del self._seen[oldest_key]
            if key in self._seen:
                return Use.USED
            if len(self._seen) >= self.max_entries:
                log.warning("btauth replay cache is full; refusing new requests until it drains")
                return Use.FULL
            self._seen[key] = now + self.retention
            return Use.ACCEPTED

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        """``bittensor.http_auth.NonceStore``'s method: :meth:`consume` as a bool."""
        return self.consume((hotkey_ss58, nonce_ns)).ok


class ValidatorGate:
    """Authorizes validator -> miner requests (see module doc for the checks).

    ``metagraph_provider`` returns the current snapshot (e.g. ``MetagraphCache``'s
    ``current``); None means "not loaded yet" and every caller is refused (403).
    """

    def __init__(
        self,
        self_hotkey_ss58: str,
        metagraph_provider: Callable[[], Metagraph | None],
        *,
        min_stake: float = 0.0,
        nonce_store: Any = None,
        max_age: float = http_auth.DEFAULT_MAX_AGE,
        allowed_skew: float = http_auth.DEFAULT_ALLOWED_SKEW,
    ) -> None:
        if not self_hotkey_ss58:
            raise ValueError("self_hotkey_ss58 is required")
        if max_age <= 0 or allowed_skew < 0 or min_stake < 0:
            raise ValueError("max_age must be > 0; allowed_skew and min_stake >= 0")
        window = max_age + allowed_skew
        if nonce_store is None:
            nonce_store = BoundedNonceStore(retention=window + 1.0)
        retention = getattr(nonce_store, "retention", None)
        if retention is not None and retention < window:
            raise ValueError("nonce_store retention must cover max_age + allowed_skew")
        self.self_hotkey_ss58 = self_hotkey_ss58
        self.min_stake = float(min_stake)
        self.max_age = float(max_age)
        self.allowed_skew = float(allowed_skew)
        self._metagraph = metagraph_provider
        self._nonces = nonce_store
        self._verify_only = _SignatureOnly(window + 1.0)

    def authenticate(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        method: str,
        path: str,
        now_ns: int | None = None,
    ) -> str:
        """Verify the btauth/1 signature and consume its nonce; returns the sender's
        hotkey ss58 (no permit check: see :meth:`authorize`)."""
        caller = self._verify(headers, body, method=method, path=path, now_ns=now_ns)
        self._record(caller.hotkey_ss58, caller.nonce_ns)
        return caller.hotkey_ss58

    def _verify(self, headers: Mapping[str, str], body: bytes, *, method: str, path: str,
                now_ns: int | None) -> Any:
        """The signature checks of ``http_auth.verify``; records no nonce."""
        try:
            return http_auth.verify(
                headers,
                bytes(body),
                method=method,
                path=path,
                self_hotkey_ss58=self.self_hotkey_ss58,
                max_age=self.max_age,
                allowed_skew=self.allowed_skew,
                require_receiver=True,
                nonce_store=self._verify_only,
                now_ns=now_ns,
            )
        except http_auth.AuthError as exc:
            reason = next((r for t, r in _REASONS.items() if isinstance(exc, t)), "invalid")
            raise AuthenticationError(f"btauth/1 {reason}: {exc}", reason=reason) from None
        except (ValueError, TypeError, UnicodeError):
            raise AuthenticationError("btauth/1 malformed: unreadable authentication headers",
                                      reason="malformed") from None

    def _record(self, hotkey: str, nonce_ns: int) -> None:
        consume = getattr(self._nonces, "consume", None)
        if consume is None:  # a plain http_auth.NonceStore
            if not self._nonces.check_and_store(hotkey, nonce_ns):
                raise AuthenticationError("btauth/1 replayed: this nonce was already accepted "
                                          "from this hotkey", reason="replayed")
            return
        use = consume((hotkey, nonce_ns))
        if use == Use.FULL:
            raise ReplayCacheFull("busy: too many recent requests; retry shortly")
        if not use.ok:
            raise AuthenticationError("btauth/1 replayed: this nonce was already accepted "
                                      "from this hotkey", reason="replayed")

    def authorize(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        method: str,
        path: str,
        now_ns: int | None = None,
    ) -> Neuron:
        """Authenticate, then admit only permitted validators; returns their neuron.

        Raises ``AuthenticationError`` (401), ``PermissionDenied`` (403) or
        ``ReplayCacheFull`` (503: the replay cache is full of live entries).
        """
        caller = self._verify(headers, body, method=method, path=path, now_ns=now_ns)
        hotkey = caller.hotkey_ss58
        metagraph = self._metagraph()
        if metagraph is None:
            raise PermissionDenied("validator set not loaded yet; retry later")
        neuron = metagraph.by_hotkey(hotkey)
        if neuron is None:
            raise PermissionDenied("sender is not registered on this subnet")
        if not neuron.validator_permit:
            raise PermissionDenied("sender has no validator permit")
        if neuron.stake < self.min_stake:
            raise PermissionDenied("sender stake is below the minimum")
        self._record(hotkey, caller.nonce_ns)  # only admitted senders reach the cache
        return neuron


class MetagraphCache:
    """Keeps ``current`` up to date from ``chain`` every ``interval`` seconds.

    ``start()`` performs a first refresh (a failure is logged, not raised) and then
    refreshes in a background task. A failed refresh keeps the last good snapshot.
    The instance is callable, returning ``current``, so it can be passed directly as
    a ``ValidatorGate`` metagraph provider.
    """

    def __init__(self, chain: Chain, *, interval: float = 60.0) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.chain = chain
        self.interval = float(interval)
        self._current: Metagraph | None = None
        self._updated_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.failures = 0

    @property
    def current(self) -> Metagraph | None:
        """The latest snapshot, or None before the first successful refresh."""
        return self._current

    def __call__(self) -> Metagraph | None:
        return self._current

    @property
    def age(self) -> float | None:
        """Seconds since the last successful refresh (None if never)."""
        return None if self._updated_at is None else time.monotonic() - self._updated_at

    async def refresh(self) -> bool:
        """Fetch once; True on success. Chain errors are logged and swallowed."""
        try:
            metagraph = await self.chain.metagraph()
        except ChainError as exc:
            self.failures += 1
            log.warning("metagraph refresh failed (keeping last good snapshot): %s", exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a refresher must outlive any single failure
            self.failures += 1
            log.warning("metagraph refresh failed unexpectedly (keeping last good "
                        "snapshot): %s", type(exc).__name__)
            return False
        self._current = metagraph
        self._updated_at = time.monotonic()
        self._ready.set()
        return True

    async def wait_ready(self, timeout: float | None = None) -> Metagraph:
        """Wait for the first successful refresh; raises ``TimeoutError``."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        if self._current is None:  # _ready is set only after a snapshot is stored
            raise RuntimeError("metagraph marked ready without a snapshot")
        return self._current

    async def start(self) -> None:
        """Refresh once now, then keep refreshing in the background (idempotent)."""
        if self._task is not None:
            return
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="metagraph-cache")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()

    async def stop(self) -> None:
        """Cancel the background task (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> MetagraphCache:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
