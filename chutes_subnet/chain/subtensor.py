"""``BittensorChain``: the :class:`~chutes_subnet.chain.Chain` over bittensor 11.x.

The only place in chutes-subnet that talks to subtensor. Reads go through
``Client.subnets.metagraph`` and block-pinned storage queries; writes through the
SDK's intents (``ServeAxon``, ``SetWeights``) and ``Client.execute``, which conform,
preflight and sign. Every SDK call carries a timeout, and SDK / transport exceptions
are translated here into :class:`~chutes_subnet.errors.ChainError` (``from exc``).

``set_weights`` checks ``blocks_since_last_update`` against ``weights_rate_limit``
before signing anything, then submits with bounded retries and exponential backoff
on transient failures (connection errors, timeouts, transaction-pool races). Chain
rejections (rate limit, not registered, no permit, bad version key) are final and
come back as an unsuccessful :class:`~chutes_subnet.chain.WeightsResult`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import bittensor as bt
from bittensor.result import BittensorError, RpcConnectionError
from bittensor.result import ChainError as SdkChainError

from ..errors import ChainError
from ..wallets import hotkey_ss58
from .types import Metagraph, Neuron, WeightsResult

__all__ = ["BittensorChain", "to_metagraph"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Failure messages of a submitted extrinsic that are worth resubmitting: pool races
# and extrinsics that left the pool without being included.
_TRANSIENT_MESSAGES = (
    "priority is too low",
    "outdated",
    "stale",
    "usurped",
    "dropped",
    "retracted",
    "finalitytimeout",
    "timed out",
    "timeout",
)


class _Transient(Exception):
    """Internal marker: the attempt failed in a way a retry may fix."""


def _rao_to_units(balance: Any) -> float:
    rao = getattr(balance, "rao", balance)
    return int(rao or 0) / 1e9


def to_metagraph(netuid: int, sdk_metagraph: Any) -> Metagraph:
    """Project the SDK's ``bittensor.Metagraph`` onto our frozen :class:`Metagraph`."""
    neurons = tuple(
        Neuron(
            uid=int(n.uid),
            hotkey=str(n.hotkey),
            coldkey=str(n.coldkey),
            validator_permit=bool(n.validator_permit),
            stake=_rao_to_units(n.total_stake),
            axon=n.axon or None,
        )
        for n in sdk_metagraph.neurons
    )
    return Metagraph(netuid=netuid, block=int(sdk_metagraph.block), neurons=neurons)


def _is_transient_message(message: str) -> bool:
    lowered = (message or "").lower()
    return any(needle in lowered for needle in _TRANSIENT_MESSAGES)


class BittensorChain:
    """Subtensor access through bittensor 11.x (see module doc).

    ``network`` is a bittensor network name (``finney``, ``test``, ``local``, ...);
    ``chain_endpoint`` (``ws://`` / ``wss://``) overrides it and pins the client to
    that single endpoint. ``wallet`` may be None for read-only use. ``substrate`` is
    the SDK's offline seam (tests only). With ``dry_run`` writes are planned through
    the SDK (build + preflight + fee) but never submitted.
    """

    def __init__(
        self,
        netuid: int,
        wallet: Any,
        network: str = "finney",
        chain_endpoint: str | None = None,
        timeout: float = 30,
        *,
        max_attempts: int = 3,
        backoff: float = 2.0,
        dry_run: bool = False,
        substrate: Any = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.netuid = int(netuid)
        self.wallet = wallet
        self.timeout = float(timeout)
        self.max_attempts = int(max_attempts)
        self.backoff = float(backoff)
        self.dry_run = dry_run
        self._sleep = sleep
        pinned: dict[str, Any] = (
            {"fallback_endpoints": [], "archive_endpoints": []} if chain_endpoint else {}
        )
        try:
            self._client = bt.Client(chain_endpoint or network, substrate=substrate, **pinned)
        except (ValueError, BittensorError) as exc:
            raise ChainError(f"unknown network or endpoint {chain_endpoint or network!r}: {exc} "
                             "Fix --subtensor.network / --subtensor.chain_endpoint (a dev chain "
                             "file is local:/path/chain.sqlite).") from exc
        self._connected = False
        self._connect_lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        """The websocket endpoint the client talks to."""
        return str(self._client.endpoint)

    # --- plumbing ---------------------------------------------------------------

    async def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run one SDK call with the timeout, translating failures to ChainError."""
        await self._ensure_connected()
        try:
            return await asyncio.wait_for(make(), self.timeout)
        except ChainError:
            raise
        except TimeoutError as exc:
            raise ChainError(f"{what}: timed out after {self.timeout:g}s") from exc
        except (BittensorError, OSError) as exc:
            raise ChainError(f"{what}: {exc}") from exc

    async def _ensure_connected(self) -> None:
        if self._connected:
            return
        async with self._connect_lock:
            if self._connected:
                return
            try:
                await asyncio.wait_for(self._client.connect(), self.timeout)
            except TimeoutError as exc:
                raise ChainError(f"cannot connect to {self.endpoint}: timed out after "
                                 f"{self.timeout:g}s; check --subtensor.chain_endpoint and the "
                                 "network path to the node") from exc
            except (BittensorError, OSError) as exc:
                raise ChainError(f"cannot connect to {self.endpoint}: {exc}; is the node "
                                 "running, and are --subtensor.network / "
                                 "--subtensor.chain_endpoint right?") from exc
            self._connected = True

    def _own_hotkey(self, hotkey: str) -> None:
        if self.wallet is None:
            raise ChainError("this chain client has no wallet; writes are not possible")
        if hotkey != hotkey_ss58(self.wallet):
            raise ChainError("hotkey does not match the wallet this chain client signs with")

    async def _last_update(self, hotkey: str) -> tuple[int, int]:
        """``(block, LastUpdate)`` for ``hotkey``, read at one pinned block."""

        async def read() -> tuple[int, int]:
            view = await self._client.at()
            uid = await view.query(bt.storage.SubtensorModule.Uids, [self.netuid, hotkey])
            if uid is None:
                raise ChainError(f"hotkey is not registered on netuid {self.netuid}")
            last = await view.query(bt.storage.SubtensorModule.LastUpdate, [self.netuid])
            values = list(last or [])
            value = int(values[int(uid)]) if int(uid) < len(values) else 0
            return int(view.block), value

        return await self._call("read LastUpdate", read)

    # --- Chain interface --------------------------------------------------------

    async def metagraph(self) -> Metagraph:
        graph = await self._call(
            "read metagraph",
            lambda: self._client.subnets.metagraph(self.netuid, commitments=False),
        )
        if graph is None:
            raise ChainError(f"subnet {self.netuid} does not exist on {self.endpoint}: check "
                             "--netuid (btcli subnets list)")
        return to_metagraph(self.netuid, graph)

    async def block(self) -> int:
        return int(await self._call("read block", self._client.block))

    async def serve_axon(self, hotkey: str, ip: str, port: int) -> None:
        self._own_hotkey(hotkey)
        intent = bt.ServeAxon(netuid=self.netuid, ip=ip, port=int(port))
        if self.dry_run:
            await self._call("plan serve_axon", lambda: self._client.plan(intent, self.wallet))
            return
        result = await self._call(
            "serve_axon",
            lambda: self._client.execute(
                intent, self.wallet, wait_for_inclusion=True, wait_for_finalization=False
            ),
        )
        if not result.success:
            raise ChainError(f"serve_axon rejected: {result.message}")

    async def blocks_since_last_update(self, hotkey: str) -> int:
        block, last = await self._last_update(hotkey)
        return block - last

    async def weights_rate_limit(self) -> int:
        value = await self._call(
            "read WeightsSetRateLimit",
            lambda: self._client.query(
                bt.storage.SubtensorModule.WeightsSetRateLimit,  # type: ignore[arg-type]
                [self.netuid]
            ),
        )
        return int(value or 0)

    async def set_weights(
        self, hotkey: str, weights: dict[int, float], version_key: int
    ) -> WeightsResult:
        self._own_hotkey(hotkey)
        block, last = await self._last_update(hotkey)
        limit = await self.weights_rate_limit()
        since = block - last
        if last > 0 and since < limit:
            return WeightsResult(
                False,
                f"rate limited: weights were set {since} blocks ago; the limit is "
                f"{limit} blocks (retry in {limit - since})",
                block,
            )
        try:
            intent = bt.SetWeights(
                netuid=self.netuid,
                weights={int(uid): float(w) for uid, w in weights.items()},
                version_key=int(version_key),
            )
        except BittensorError as exc:
            return WeightsResult(False, f"invalid weights: {exc}", block)
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self._submit_weights(intent, block)
            except _Transient as exc:
                landed = await self._landed_since(hotkey, last)
                if landed is not None and not self.dry_run:
                    return WeightsResult(True, f"weights landed at block {landed} (the "
                                         f"confirmation failed: {exc})", block)
                if attempt == self.max_attempts:
                    return WeightsResult(False, f"gave up after {attempt} attempts: {exc}", block)
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning("set_weights attempt %d failed (%s); retrying in %.1fs",
                            attempt, exc, delay)
                await self._sleep(delay)
        raise AssertionError("unreachable")

    async def _landed_since(self, hotkey: str, last: int) -> int | None:
        """The new ``LastUpdate`` if a submission landed after all (e.g. its confirmation
        timed out), else None; a failed read counts as "not known to have landed"."""
        try:
            _block, now = await self._last_update(hotkey)
        except ChainError:
            return None
        return now if now > last else None

    async def _submit_weights(self, intent: Any, block: int) -> WeightsResult:
        """One attempt. Raises _Transient for retryable failures."""
        try:
            if self.dry_run:
                plan = await asyncio.wait_for(self._client.plan(intent, self.wallet), self.timeout)
                if not plan.ok:
                    return WeightsResult(False, "; ".join(plan.violations), block)
                return WeightsResult(True, f"dry run: {plan.summary}", block)
            result = await asyncio.wait_for(
                self._client.execute(
                    intent, self.wallet, wait_for_inclusion=True, wait_for_finalization=False
                ),
                self.timeout,
            )
        except TimeoutError as exc:
            raise _Transient(f"timed out after {self.timeout:g}s") from exc
        except (RpcConnectionError, OSError) as exc:
            raise _Transient(str(exc) or type(exc).__name__) from exc
        except SdkChainError as exc:
            if _is_transient_message(exc.message):
                raise _Transient(exc.message) from exc
            return WeightsResult(False, exc.message, block)
        except BittensorError as exc:
            return WeightsResult(False, str(exc), block)
        if result.success:
            return WeightsResult(True, result.message or "weights submitted", block)
        if _is_transient_message(result.message):
            raise _Transient(result.message)
        return WeightsResult(False, result.message or "weights rejected", block)

    async def aclose(self) -> None:
        if self._connected:
            self._connected = False
            try:
                await asyncio.wait_for(self._client.close(), self.timeout)
            except Exception as exc:  # noqa: BLE001 - closing is best-effort; never mask the caller's error
                log.debug("closing the chain client failed: %s", type(exc).__name__)

    def __repr__(self) -> str:
        return f"BittensorChain(netuid={self.netuid}, endpoint={self.endpoint!r})"
