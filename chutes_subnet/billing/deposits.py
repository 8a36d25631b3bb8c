"""TAO deposits: one deposit address per API key, credited from finalized blocks.

Addresses
    Each key gets its own sr25519 coldkey, derived from the operator's deposit master
    seed: ``seed_k = HMAC-SHA256(master, "chutes-subnet/deposit/v1/" || key_id)``. No
    memo field is needed (the receiving address says whose deposit it is), the
    operator can re-derive every key's signing key to sweep funds, and the master seed
    is the only secret to back up. The derivation is pure and tested for stability.

Watching
    :class:`DepositWatcher` reads blocks up to ``min(finalized, head - confirmations)``
    through a :class:`ChainReader` (the bittensor SDK in production, a recorded chain in
    tests). For each block, every ``Balances.Transfer`` event whose destination is a
    deposit address becomes a credit with ref ``"<block_hash>:<event_index>"``; the
    credits, the block's hash and the cursor are written in one transaction
    (:meth:`Ledger.apply_block`), so a restart resumes exactly where it stopped and a
    block delivered twice credits nothing twice. Before each step the watcher checks
    the hashes it recorded for the last ``reorg_depth`` blocks; if the chain now has
    another block at any of them (a reorganisation deeper than the confirmations, which
    finality makes impossible on a healthy chain), the deposits of the orphaned blocks
    are reverted with journal entries and those blocks are read again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from chutes_subnet.billing.ledger import Credit, Ledger
from chutes_subnet.billing.prices import MAX_RAO

__all__ = [
    "ChainReader",
    "DepositWatcher",
    "Transfer",
    "deposit_keypair",
    "deposit_seed",
    "transfers_from_events",
]

log = logging.getLogger(__name__)

_DERIVATION_LABEL = b"chutes-subnet/deposit/v1/"
#: Blocks read per :meth:`DepositWatcher.step` at most (bounded work per call).
MAX_BLOCKS_PER_STEP = 256


def deposit_seed(master_seed: bytes, key_id: str) -> bytes:
    """The 32-byte sr25519 mini-secret of ``key_id``'s deposit coldkey."""
    if len(master_seed) < 32:
        raise ValueError("the deposit master seed must be at least 32 bytes")
    return hmac.new(master_seed, _DERIVATION_LABEL + key_id.encode("utf-8"),
                    hashlib.sha256).digest()


def deposit_keypair(master_seed: bytes, key_id: str) -> Any:
    """``key_id``'s deposit keypair (signs the sweep to the treasury)."""
    from bittensor.sp_core import Keypair

    return Keypair.create_from_seed(deposit_seed(master_seed, key_id))


@dataclass(frozen=True)
class Transfer:
    """One successful ``Balances.Transfer`` event."""

    event_index: int
    source: str
    dest: str
    amount_rao: int


class ChainReader(Protocol):
    """The reads the watcher needs (async, each with its own timeout)."""

    async def safe_head(self, confirmations: int) -> int:
        """Highest block that is finalized and has ``confirmations`` blocks above it."""
        ...

    async def block_hash(self, number: int) -> str: ...

    async def transfers(self, number: int) -> tuple[str, list[Transfer]]:
        """``(block_hash, transfers)`` of one block, read consistently."""
        ...


def _amount(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str) and value.isdigit() and len(value) <= 20:
        amount = int(value)
    else:
        return None
    return amount if 0 < amount <= MAX_RAO else None


def transfers_from_events(events: Iterable[Any]) -> list[Transfer]:
    """Pick ``Balances.Transfer`` events out of decoded ``System.Events`` records.

    Accepts the SDK's record shapes (``{"event": {"module_id", "event_id",
    "attributes"}}`` with named or positional attributes). Malformed records and
    non-positive or overflowing amounts are skipped and logged, never credited.
    """
    found: list[Transfer] = []
    for index, entry in enumerate(events):
        record = entry.value if hasattr(entry, "value") else entry
        event = record.get("event", record) if isinstance(record, dict) else None
        if not isinstance(event, dict) or (event.get("module_id"), event.get("event_id")) \
                != ("Balances", "Transfer"):
            continue
        attrs = event.get("attributes")
        if isinstance(attrs, dict):
            source, dest, raw = attrs.get("from"), attrs.get("to"), attrs.get("amount")
        elif isinstance(attrs, (list, tuple)) and len(attrs) == 3:
            source, dest, raw = attrs
        else:
            log.warning("skipping malformed transfer event #%d", index)
            continue
        amount = _amount(raw)
        if not isinstance(source, str) or not isinstance(dest, str) or amount is None:
            log.warning("skipping transfer event #%d with a bad address or amount", index)
            continue
        found.append(Transfer(index, source, dest, amount))
    return found


class DepositWatcher:
    """Credits deposits to keys' addresses from confirmed blocks, exactly once."""

    def __init__(self, ledger: Ledger, chain: ChainReader, *, start_block: int,
                 confirmations: int = 12, reorg_depth: int = 64, name: str = "deposits") -> None:
        if confirmations < 0 or reorg_depth < 1 or start_block < 0:
            raise ValueError("confirmations >= 0, reorg_depth >= 1 and start_block >= 0")
        self.ledger, self.chain, self.name = ledger, chain, name
        self.start_block, self.confirmations, self.reorg_depth = (
            start_block, confirmations, reorg_depth)

    async def _fork_point(self, last: int) -> int | None:
        """Lowest recorded block whose hash the chain no longer has, if any."""
        fork = None
        for number in range(last, max(self.start_block, last - self.reorg_depth + 1) - 1, -1):
            recorded = self.ledger.block_hash(self.name, number)
            if recorded is None:
                break
            if recorded == await self.chain.block_hash(number):
                break
            fork = number
        return fork

    async def step(self) -> int:
        """Apply the next confirmed blocks (at most :data:`MAX_BLOCKS_PER_STEP`);
        returns the number of new credits."""
        cursor = self.ledger.last_block(self.name)
        next_block = self.start_block
        if cursor is not None:
            fork = await self._fork_point(cursor[0])
            if fork is not None:
                reverted = self.ledger.revert_blocks_from(self.name, fork)
                log.error("chain reorganisation at block %d: reverted %d rao of deposits",
                          fork, reverted)
                next_block = fork
            else:
                next_block = cursor[0] + 1
        head = await self.chain.safe_head(self.confirmations)
        addresses = self.ledger.deposit_addresses()
        credited = 0
        for number in range(next_block, min(head, next_block + MAX_BLOCKS_PER_STEP - 1) + 1):
            block_hash, transfers = await self.chain.transfers(number)
            credits = [Credit(addresses[t.dest], t.amount_rao, f"{block_hash}:{t.event_index}")
                       for t in transfers if t.dest in addresses]
            credited += self.ledger.apply_block(self.name, number, block_hash, credits)
        return credited


class SdkChainReader:
    """:class:`ChainReader` over a ``bittensor.Client`` (real node or offline seam)."""

    def __init__(self, client: Any, *, timeout: float = 30.0) -> None:
        self.client, self.timeout = client, timeout

    async def _call(self, awaitable: Any) -> Any:
        import asyncio

        return await asyncio.wait_for(awaitable, self.timeout)

    async def safe_head(self, confirmations: int) -> int:
        head = await self._call(self.client.block())
        finalized = await self._call(self.client.finalized_block())
        return min(int(finalized), int(head) - confirmations)

    async def block_hash(self, number: int) -> str:
        info = await self._call(self.client.block_info(number))
        if info is None or not info.hash:
            raise LookupError(f"block {number} is not on the chain")
        return str(info.hash)

    async def transfers(self, number: int) -> tuple[str, list[Transfer]]:
        for _attempt in range(3):
            before = await self.block_hash(number)
            events = await self._call(self.client.query(("System", "Events"), block=number))
            if await self.block_hash(number) == before:
                return before, transfers_from_events(events or [])
        raise LookupError(f"block {number} kept changing while it was read")
