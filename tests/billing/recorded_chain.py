"""A recorded chain behind the bittensor SDK's own backend seam (``bt.Client(substrate=…)``).

No subtensor node can run here, so blocks are recorded shapes: a header with number
and hash, a ``Timestamp.set`` inherent, and decoded ``System.Events`` records exactly
as the SDK's RPC backend returns them. Everything above this class is the real SDK
(``Client.block_info``, ``Client.query``, intents, planning, the executor). Tests can
fork the chain (replace blocks), move the head and the finalized pointer, and script
extrinsic outcomes.
"""

from __future__ import annotations

from typing import Any

from bittensor.balance import Balance
from bittensor.result import ExtrinsicResult


def transfer_event(source: str, dest: str, amount: Any, extrinsic_idx: int = 1) -> dict:
    """A decoded ``Balances.Transfer`` record as the SDK's RPC backend returns it."""
    return {"phase": {"ApplyExtrinsic": extrinsic_idx}, "extrinsic_idx": extrinsic_idx,
            "event": {"module_id": "Balances", "event_id": "Transfer",
                      "attributes": {"from": source, "to": dest, "amount": amount}},
            "topics": []}


def other_event(extrinsic_idx: int = 0) -> dict:
    return {"phase": {"ApplyExtrinsic": extrinsic_idx}, "extrinsic_idx": extrinsic_idx,
            "event": {"module_id": "System", "event_id": "ExtrinsicSuccess",
                      "attributes": {"dispatch_info": {}}}, "topics": []}


class RecordedChain:
    """The SDK's ``Substrate`` protocol over recorded blocks (subset the tests use)."""

    def __init__(self, first: int = 1000, count: int = 0, fork: str = "a") -> None:
        self.token_symbols: dict[int, str] = {}
        self.blocks: dict[int, tuple[str, list[dict]]] = {}
        self.finalized = first - 1
        self.storage: dict[tuple, Any] = {}
        self.submitted: list[tuple[Any, str]] = []
        self.outcomes: list[Any] = []
        for n in range(first, first + count):
            self.set_block(n, [], fork)

    # --- recording -----------------------------------------------------------------
    def set_block(self, number: int, events: list[dict], fork: str = "a") -> str:
        block_hash = "0x" + f"{fork}{number:x}".rjust(64, "0")
        self.blocks[number] = (block_hash, [other_event(0), *events])
        return block_hash

    @property
    def head(self) -> int:
        return max(self.blocks) if self.blocks else 0

    # --- the Substrate protocol ------------------------------------------------------
    def balance(self, rao: int, netuid: int = 0) -> Balance:
        return Balance(int(rao), netuid, None)

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def block_number(self) -> int:
        return self.head

    async def finalized_block_number(self) -> int:
        return self.finalized

    async def block_hash(self, block: int | None = None) -> str:
        return self.blocks[self.head if block is None else block][0]

    async def block_time(self) -> float:
        return 12.0

    async def get_block(self, block_number=None, block_hash=None):
        number = self.head if block_number is None else block_number
        if number not in self.blocks:
            return None
        stamp = {"call": {"call_module": "Timestamp", "call_function": "set",
                          "call_args": [{"name": "now", "value": 1_700_000_000_000 + number}]}}
        return {"header": {"number": number, "hash": self.blocks[number][0]},
                "extrinsics": [stamp]}

    async def query(self, module, storage_function, params=None, block_hash=None):
        if (module, storage_function) == ("System", "Events"):
            for h, events in self.blocks.values():
                if h == block_hash:
                    return events
            return None
        return self.storage.get((storage_function, tuple(params or ())))

    async def query_map(self, module, storage_function, params=None, block_hash=None):
        return []

    async def runtime_call(self, api, method, params, block_hash=None):
        return None

    async def compose(self, call):
        return call

    async def estimate_fee(self, call, keypair) -> Balance:
        return Balance.from_rao(1000)

    async def submit(self, call, keypair, **_kwargs) -> ExtrinsicResult:
        self.submitted.append((call, keypair.ss58_address))
        outcome = self.outcomes.pop(0) if self.outcomes else ExtrinsicResult(
            True, "included", block_hash=self.blocks[self.head][0],
            extrinsic_id=f"{self.head}-2")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
