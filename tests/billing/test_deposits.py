"""Deposits through the bittensor SDK over a recorded chain: credited once, after
confirmations, across restarts, duplicates and reorganisations."""

from __future__ import annotations

import asyncio

import bittensor as bt
import pytest

from chutes_subnet.billing.deposits import (
    DepositWatcher,
    SdkChainReader,
    deposit_keypair,
    deposit_seed,
    transfers_from_events,
)
from chutes_subnet.billing.ledger import Ledger
from tests.billing.recorded_chain import RecordedChain, transfer_event

MASTER = bytes(range(32))
FIRST = 1000


def test_deposit_addresses_are_stable_distinct_and_need_a_real_seed() -> None:
    a, b = deposit_keypair(MASTER, "k1"), deposit_keypair(MASTER, "k2")
    assert a.ss58_address == deposit_keypair(MASTER, "k1").ss58_address
    assert a.ss58_address != b.ss58_address
    # independent vector: printf 'chutes-subnet/deposit/v1/k1' |
    #   openssl dgst -sha256 -mac HMAC -macopt hexkey:000102…1f
    assert deposit_seed(MASTER, "k1").hex() == (
        "86b13231d1b8a1990c4d7df5cfadf23d2b41f3a6e2b409ca9df6f70d3a8631bd")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        deposit_seed(b"short", "k1")


def test_only_well_formed_transfers_count() -> None:
    events = [
        transfer_event("5A", "5B", 10),
        transfer_event("5A", "5B", -5),
        transfer_event("5A", "5B", 1 << 70),
        transfer_event("5A", "5B", True),
        {"event": {"module_id": "Balances", "event_id": "Transfer", "attributes": ["5A", "5B"]}},
        {"event": {"module_id": "Balances", "event_id": "Transfer",
                   "attributes": ("5A", "5C", "77")}},
        "garbage",
    ]
    assert [(t.event_index, t.dest, t.amount_rao) for t in transfers_from_events(events)] == [
        (0, "5B", 10), (5, "5C", 77)]


class Setup:
    def __init__(self, ledger: Ledger, confirmations: int = 3) -> None:
        self.ledger = ledger
        self.node = RecordedChain(FIRST, 10)
        self.node.finalized = FIRST + 9
        self.client = bt.Client(substrate=self.node)
        self.alice = ledger.assign_address("alice", deposit_keypair(MASTER, "alice").ss58_address)
        self.bob = ledger.assign_address("bob", deposit_keypair(MASTER, "bob").ss58_address)
        self.confirmations = confirmations

    def watcher(self) -> DepositWatcher:
        return DepositWatcher(self.ledger, SdkChainReader(self.client), start_block=FIRST,
                              confirmations=self.confirmations)

    def step(self) -> int:
        return asyncio.run(self.watcher().step())


def test_credited_once_after_confirmations_across_restarts(ledger: Ledger) -> None:
    s = Setup(ledger)
    s.node.set_block(FIRST + 5, [transfer_event("5Payer", s.alice, 3_000_000_000)])
    s.node.set_block(FIRST + 6, [transfer_event("5Payer", "5Unknown", 9),  # not ours
                                 transfer_event("5Payer", s.bob, 1_000)])
    s.node.set_block(FIRST + 8, [transfer_event("5Payer", s.alice, 500)])
    assert s.step() == 2  # head 1009 - 3 confirmations = 1006
    assert ledger.balance("alice") == 3_000_000_000 and ledger.balance("bob") == 1_000
    assert ledger.last_block("deposits")[0] == FIRST + 6
    assert s.step() == 0  # nothing new confirmed; a restarted watcher re-reads nothing
    for n in range(FIRST + 10, FIRST + 13):
        s.node.set_block(n, [])
    s.node.finalized = FIRST + 12
    assert s.step() == 1  # a fresh watcher (restart) resumes after 1006
    assert ledger.balance("alice") == 3_000_000_500
    assert s.step() == 0 and ledger.balance("alice") == 3_000_000_500


def test_finality_gates_crediting(ledger: Ledger) -> None:
    s = Setup(ledger, confirmations=0)
    s.node.finalized = FIRST + 2
    s.node.set_block(FIRST + 5, [transfer_event("5Payer", s.alice, 42)])
    assert s.step() == 0 and ledger.balance("alice") == 0
    s.node.finalized = FIRST + 9
    assert s.step() == 1 and ledger.balance("alice") == 42


def test_reorg_before_confirmation_credits_only_the_canonical_fork(ledger: Ledger) -> None:
    s = Setup(ledger)
    s.node.set_block(FIRST + 8, [transfer_event("5Payer", s.alice, 1_111)], fork="a")
    s.step()
    # block 1008 is replaced before it had 3 confirmations: the transfer moved to 1009
    s.node.set_block(FIRST + 8, [], fork="b")
    s.node.set_block(FIRST + 9, [transfer_event("5Payer", s.alice, 1_111)], fork="b")
    for n in range(FIRST + 10, FIRST + 14):
        s.node.set_block(n, [], fork="b")
    s.node.finalized = FIRST + 13
    assert s.step() == 1
    assert ledger.balance("alice") == 1_111


def test_deep_reorg_reverts_orphaned_deposits(ledger: Ledger) -> None:
    """If a chain ever reorganises past the confirmations, orphaned deposits are
    reverted with journal entries and the new fork is read."""
    s = Setup(ledger, confirmations=0)
    s.node.set_block(FIRST + 7, [transfer_event("5Payer", s.alice, 900)], fork="a")
    assert s.step() == 1 and ledger.balance("alice") == 900
    s.node.set_block(FIRST + 7, [transfer_event("5Payer", s.bob, 50)], fork="b")
    s.node.set_block(FIRST + 8, [], fork="b")
    s.node.set_block(FIRST + 9, [], fork="b")
    assert s.step() == 1
    assert ledger.balance("alice") == 0 and ledger.balance("bob") == 50
    kinds = sorted(e.kind for e in ledger.entries("alice"))
    assert kinds == ["deposit", "deposit_reverted"]
    assert sum(e.amount_rao for e in ledger.entries("alice")) == 0
