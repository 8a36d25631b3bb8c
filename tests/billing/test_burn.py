"""Buy-back-and-burn and deposit sweeps through the bittensor SDK (StakeBurn /
TransferAll intents, planned and executed) over a recorded chain."""

from __future__ import annotations

import asyncio

import bittensor as bt
import pytest
from bittensor.result import ExtrinsicResult

from chutes_subnet.billing.deposits import deposit_keypair
from chutes_subnet.billing.ledger import Ledger
from chutes_subnet.billing.prices import TokenPrice
from chutes_subnet.billing.treasury import BurnPolicy, revenue_rao, run_burn, sweep_deposits
from chutes_subnet.wallets import ensure_dev_wallet
from tests.billing.recorded_chain import RecordedChain

PRICE = TokenPrice(prompt_rao_per_mtok=10**9, completion_rao_per_mtok=10**9)  # 1000 rao/token
POLICY = BurnPolicy(netuid=7, share_bps=5_000, threshold_rao=1_000_000, limit_price=10**9)


@pytest.fixture
def owner(tmp_path):
    return ensure_dev_wallet("owner", "default", str(tmp_path / "wallets"))


def spend(ledger: Ledger, tokens: int, ref: str) -> None:
    ledger.credit("k", tokens * 1000, f"dep-{ref}")
    ledger.charge("k", "m", tokens, 0, ref, PRICE)


def test_burn_dry_run_submit_failure_and_audit(ledger: Ledger, owner) -> None:
    node = RecordedChain(1000, 5)
    client = bt.Client(substrate=node)
    spend(ledger, 1_000, "r1")  # revenue 1,000,000 rao: half is below the threshold
    out = asyncio.run(run_burn(ledger, client, owner, POLICY))
    assert (out.outcome, out.amount_rao) == ("below_threshold", 500_000)
    spend(ledger, 3_000, "r2")  # revenue 4,000,000 rao -> 2,000,000 to burn
    assert revenue_rao(ledger) == 4_000_000
    out = asyncio.run(run_burn(ledger, client, owner, POLICY))  # dry run by default
    assert (out.outcome, out.amount_rao) == ("dry_run", 2_000_000)
    assert "stake burn" in out.message and node.submitted == []
    assert ledger.burned_rao() == 0
    node.outcomes = [ExtrinsicResult(False, "SlippageTooHigh")]
    out = asyncio.run(run_burn(ledger, client, owner, POLICY, dry_run=False))
    assert (out.outcome, out.message) == ("failed", "SlippageTooHigh")
    assert ledger.burned_rao() == 0  # nothing spent: the next run retries the same amount
    out = asyncio.run(run_burn(ledger, client, owner, POLICY, dry_run=False))
    assert (out.outcome, out.amount_rao, out.extrinsic, out.block) == (
        "submitted", 2_000_000, "1004-2", 1004)
    call, signer = node.submitted[-1]
    assert signer == owner.coldkey.ss58_address
    assert "add_stake_burn" in repr(call) and "2000000" in repr(call)
    assert ledger.burned_rao() == 2_000_000
    out = asyncio.run(run_burn(ledger, client, owner, POLICY, dry_run=False))
    assert out.outcome == "below_threshold" and out.amount_rao == 0  # already burned
    audit = [(line[1], line[3]) for line in reversed(ledger.burn_audit())]
    assert audit == [("below_threshold", 500_000), ("dry_run", 2_000_000),
                     ("failed", 2_000_000), ("submitted", 2_000_000), ("below_threshold", 0)]


def test_a_raising_chain_is_an_audited_failure(ledger: Ledger, owner) -> None:
    node = RecordedChain(1000, 5)
    node.outcomes = [ConnectionResetError("node went away")]
    spend(ledger, 5_000, "r")
    out = asyncio.run(run_burn(ledger, bt.Client(substrate=node), owner, POLICY, dry_run=False))
    assert out.outcome == "failed" and "node went away" in out.message
    assert ledger.burned_rao() == 0 and ledger.burn_audit()[0][1] == "failed"


def test_burn_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="root subnet"):
        BurnPolicy(netuid=0)
    with pytest.raises(ValueError, match="share_bps"):
        BurnPolicy(netuid=7, share_bps=10_001)


def test_sweep_signs_with_each_deposit_key(ledger: Ledger, owner) -> None:
    master = bytes(32 * [7])
    for key in ("a", "b"):
        ledger.assign_address(key, deposit_keypair(master, key).ss58_address)
    node = RecordedChain(1000, 5)
    node.outcomes = [ExtrinsicResult(True, "ok"), ExtrinsicResult(False, "InsufficientBalance")]
    client = bt.Client(substrate=node)
    planned = asyncio.run(sweep_deposits(ledger, client, master, owner.coldkey.ss58_address))
    assert [k for k, _ in planned] == ["a", "b"] and node.submitted == []
    assert all(o.startswith("dry run: transfer ALL") for _, o in planned)
    done = asyncio.run(sweep_deposits(ledger, client, master, owner.coldkey.ss58_address,
                                      dry_run=False))
    assert done == [("a", "swept"), ("b", "failed: InsufficientBalance")]
    assert [s for _, s in node.submitted] == [deposit_keypair(master, k).ss58_address
                                              for k in ("a", "b")]
