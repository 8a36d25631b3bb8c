"""Moving collected TAO: sweeping deposit addresses to the treasury, and the
revenue buy-back-and-burn.

Burn policy
    Revenue is what keys have spent (usage charges and plan purchases: the negated sum
    of those journal entries). On each run the job may burn ``share_bps / 10_000`` of
    all revenue so far, minus what earlier *submitted* burns already spent; it acts
    only when that amount reaches ``threshold_rao``. The burn is bittensor's
    ``StakeBurn`` intent on the subnet (buys the subnet's alpha with TAO and burns it),
    with ``limit_price`` or ``rate_tolerance`` bounding the price. Dry run is the
    default: it plans the intent through the SDK (fee, policy) and submits nothing.
    Every run appends one audit line (``below_threshold``, ``dry_run``, ``submitted``
    or ``failed``, with amounts, block and extrinsic id); a failed burn spends nothing
    in the ledger, so the next run retries the same amount.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from chutes_subnet.billing.deposits import deposit_keypair
from chutes_subnet.billing.ledger import Ledger

__all__ = ["BurnOutcome", "BurnPolicy", "revenue_rao", "run_burn", "sweep_deposits"]

_REVENUE_KINDS = ("usage", "plan")


def revenue_rao(ledger: Ledger) -> int:
    """Rao spent by keys so far (usage charges and plan purchases)."""
    totals = ledger.totals()
    return -sum(totals.get(kind, 0) for kind in _REVENUE_KINDS)


@dataclass(frozen=True)
class BurnPolicy:
    """Operator settings of the buy-back-and-burn job."""

    netuid: int
    share_bps: int = 10_000  #: share of revenue to burn, in basis points
    threshold_rao: int = 1_000_000_000  #: act only from 1 TAO
    limit_price: int | None = None  #: rao per alpha; None = pool price + rate_tolerance
    rate_tolerance: float = 0.02

    def __post_init__(self) -> None:
        if not 0 <= self.share_bps <= 10_000:
            raise ValueError("share_bps must be in 0..10000")
        if self.netuid <= 0:
            raise ValueError("burns need a subnet netuid > 0 (the root subnet cannot burn)")
        if self.threshold_rao < 1:
            raise ValueError("threshold_rao must be >= 1")


@dataclass(frozen=True)
class BurnOutcome:
    """What one run did (also written to the audit log)."""

    outcome: str
    collected_rao: int
    amount_rao: int
    message: str
    block: int | None = None
    extrinsic: str | None = None


async def run_burn(ledger: Ledger, client: Any, wallet: Any, policy: BurnPolicy, *,
                   dry_run: bool = True, timeout: float = 120.0) -> BurnOutcome:
    """One scheduled run of the buy-back-and-burn (see the module docstring)."""
    import bittensor as bt
    from bittensor.balance import Balance

    collected = revenue_rao(ledger)
    amount = collected * policy.share_bps // 10_000 - ledger.burned_rao()
    if amount < policy.threshold_rao:
        out = BurnOutcome("below_threshold", collected, max(0, amount),
                          f"{max(0, amount)} rao to burn is below the threshold "
                          f"{policy.threshold_rao}")
    else:
        intent = bt.StakeBurn(netuid=policy.netuid, amount_tao=Balance.from_rao(amount),
                              limit_price=policy.limit_price,
                              rate_tolerance=policy.rate_tolerance)
        out = await _burn(client, wallet, intent, collected, amount, dry_run, timeout)
    ledger.record_burn(out.outcome, out.collected_rao, out.amount_rao, out.message,
                       block_number=out.block, extrinsic=out.extrinsic)
    return out


async def _burn(client: Any, wallet: Any, intent: Any, collected: int, amount: int,
                dry_run: bool, timeout: float) -> BurnOutcome:
    try:
        if dry_run:
            plan = await asyncio.wait_for(client.plan(intent, wallet), timeout)
            if not plan.ok:
                return BurnOutcome("failed", collected, amount,
                                   "dry run refused: " + "; ".join(plan.violations))
            return BurnOutcome("dry_run", collected, amount, f"dry run: {plan.summary}")
        result = await asyncio.wait_for(
            client.execute(intent, wallet, wait_for_inclusion=True, wait_for_finalization=True),
            timeout)
    except TimeoutError:
        return BurnOutcome("failed", collected, amount,
                           f"no answer within {timeout:g}s; check the chain before retrying")
    except Exception as exc:  # noqa: BLE001 - any SDK error is this run's audited failure
        return BurnOutcome("failed", collected, amount, f"{type(exc).__name__}: {exc}")
    if not result.success:
        return BurnOutcome("failed", collected, amount, result.message or "burn rejected")
    block = None
    if result.extrinsic_id and "-" in result.extrinsic_id:
        head = result.extrinsic_id.split("-", 1)[0]
        block = int(head) if head.isdigit() else None
    return BurnOutcome("submitted", collected, amount, result.message or "burned",
                       block=block, extrinsic=result.extrinsic_id or result.block_hash)


async def sweep_deposits(ledger: Ledger, client: Any, master_seed: bytes, treasury: str, *,
                         dry_run: bool = True, timeout: float = 60.0) -> list[tuple[str, str]]:
    """Move every deposit address's funds to the ``treasury`` coldkey.

    Each address signs its own ``TransferAll`` (keep-alive off: the account is emptied).
    Returns ``(key_id, outcome)`` per key; failures are reported, never raised, and a
    later sweep retries them. Balances in the ledger do not change: they were credited
    when the deposit was seen.
    """
    import bittensor as bt

    outcomes: list[tuple[str, str]] = []
    for _address, key_id in sorted(ledger.deposit_addresses().items()):
        intent = bt.TransferAll(dest_ss58=treasury, keep_alive=False)
        keypair = deposit_keypair(master_seed, key_id)
        try:
            if dry_run:
                plan = await asyncio.wait_for(client.plan(intent, keypair), timeout)
                outcomes.append((key_id, f"dry run: {plan.summary}" if plan.ok
                                 else "refused: " + "; ".join(plan.violations)))
                continue
            result = await asyncio.wait_for(client.execute(intent, keypair), timeout)
            outcomes.append((key_id, "swept" if result.success
                             else f"failed: {result.message}"))
        except Exception as exc:  # noqa: BLE001 - one key's failure must not stop the others
            outcomes.append((key_id, f"failed: {type(exc).__name__}: {exc}"))
    return outcomes
