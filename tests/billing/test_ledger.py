"""The ledger on SQLite and on a real PostgreSQL: exact money, exactly-once entries,
no lost update under concurrent writers."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from chutes_subnet.billing.ledger import Credit, InsufficientBalance, Ledger
from chutes_subnet.billing.plans import Plan
from chutes_subnet.billing.prices import MAX_RAO, TokenPrice, cost_rao

PRICE = TokenPrice(prompt_rao_per_mtok=20_000_000, completion_rao_per_mtok=80_000_000)


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def entry_sum(ledger: Ledger, key: str) -> int:
    return sum(e.amount_rao for e in ledger.entries(key, limit=10_000))


def test_credit_is_idempotent_and_balance_equals_the_journal(ledger: Ledger) -> None:
    assert ledger.balance("k1") == 0
    assert ledger.credit("k1", 5_000, "0xaa:3") is True
    assert ledger.credit("k1", 5_000, "0xaa:3") is False  # the same chain event twice
    assert ledger.balance("k1") == 5_000 == entry_sum(ledger, "k1")


@pytest.mark.parametrize("amount, message", [(-1, "between 0"), (MAX_RAO + 1, "between 0"),
                                             (1.5, "integer"), (True, "integer")])
def test_bad_credit_amounts_change_nothing(ledger: Ledger, amount, message) -> None:
    with pytest.raises(ValueError, match=message):
        ledger.credit("k1", amount, "ref-bad")
    assert ledger.balance("k1") == 0 and ledger.entries("k1") == []


def test_charge_debits_exact_cost_once(ledger: Ledger) -> None:
    ledger.credit("k1", 10_000, "dep")
    charge = ledger.charge("k1", "m", 27, 8, "req-1", PRICE)
    assert charge.cost_rao == cost_rao(27, 8, PRICE) == 1180
    assert charge.balance_rao == 10_000 - 1180
    again = ledger.charge("k1", "m", 27, 8, "req-1", PRICE)  # a retried charge
    assert again.duplicate and again.cost_rao == 0 and again.balance_rao == 8820
    assert ledger.balance("k1") == 8820 == entry_sum(ledger, "k1")
    usage = [e for e in ledger.entries("k1") if e.kind == "usage"]
    assert [(u.model, u.prompt_tokens, u.completion_tokens) for u in usage] == [("m", 27, 8)]


def test_admission_follows_balance_and_plan(ledger: Ledger) -> None:
    assert not ledger.admission("k1").allowed
    ledger.credit("k1", 1180, "dep")
    assert ledger.admission("k1").allowed
    ledger.charge("k1", "m", 27, 8, "r1", PRICE)
    assert ledger.balance("k1") == 0 and not ledger.admission("k1").allowed
    ledger.charge("k1", "m", 1, 0, "r2", PRICE)  # one answer may overdraw, then refused
    assert ledger.balance("k1") == -20 and not ledger.admission("k1").allowed


def test_plan_purchase_quota_reset_and_expiry(ledger: Ledger) -> None:
    plan = Plan("daily-100", "day", tokens_per_period=100, price_rao=500, term_periods=2)
    day1 = ts(2026, 12, 2, 10)
    ledger.credit("k1", 400, "dep1", now=day1)
    with pytest.raises(InsufficientBalance, match="costs 500 rao; balance is 400"):
        ledger.buy_plan("k1", plan, "buy-1", now=day1)
    assert ledger.balance("k1") == 400 and ledger.subscription("k1") is None
    ledger.credit("k1", 600, "dep2", now=day1)
    sub = ledger.buy_plan("k1", plan, "buy-1", now=day1)
    assert ledger.buy_plan("k1", plan, "buy-1", now=day1) == sub  # idempotent
    assert ledger.balance("k1") == 500 and sub.remaining(day1) == 100
    # within quota: free; beyond it: prompt covered first, the rest at the model's price
    assert ledger.charge("k1", "m", 60, 30, "a", PRICE, now=day1).cost_rao == 0
    over = ledger.charge("k1", "m", 5, 20, "b", PRICE, now=day1 + 60)
    assert over.plan_tokens == 10 and over.cost_rao == cost_rao(0, 15, PRICE)
    assert ledger.admission("k1", now=day1 + 61).plan_tokens_left == 0
    # next UTC day: the quota resets
    day2 = ts(2026, 12, 3, 0, 0, 1)
    assert ledger.admission("k1", now=day2).plan_tokens_left == 100
    assert ledger.charge("k1", "m", 50, 0, "c", PRICE, now=day2).cost_rao == 0
    assert ledger.admission("k1", now=day2).plan_tokens_left == 50
    # after the term: no quota at all
    assert ledger.admission("k1", now=ts(2026, 12, 4, 0, 0, 1)).plan_tokens_left == 0
    assert ledger.balance("k1") == entry_sum(ledger, "k1")


def test_blocks_apply_once_and_revert(ledger: Ledger) -> None:
    credits = [Credit("k1", 700, "0xb1:1"), Credit("k2", 300, "0xb1:4")]
    assert ledger.apply_block("w", 10, "0xb1", credits) == 2
    assert ledger.apply_block("w", 10, "0xb1", credits) == 0  # delivered twice
    assert ledger.last_block("w") == (10, "0xb1")
    assert ledger.revert_blocks_from("w", 10) == 1000
    assert ledger.revert_blocks_from("w", 10) == 0  # already reverted
    assert ledger.balance("k1") == 0 and ledger.last_block("w") is None
    # the same transfers, included again by the new fork, credit again (new hash)
    assert ledger.apply_block("w", 10, "0xc1", [Credit("k1", 700, "0xc1:1")]) == 1
    assert ledger.balance("k1") == 700 == entry_sum(ledger, "k1")


def test_a_block_that_fails_midway_applies_nothing(ledger: Ledger) -> None:
    """A watcher that dies inside a block (here: a bad credit after a good one) leaves
    no partial credit and no cursor: the restarted watcher reads the block again."""
    with pytest.raises(ValueError, match="credit amount"):
        ledger.apply_block("w", 11, "0xd1", [Credit("k1", 500, "0xd1:1"),
                                             Credit("k2", -1, "0xd1:2")])
    assert ledger.balance("k1") == 0 and ledger.entries() == []
    assert ledger.last_block("w") is None
    assert ledger.apply_block("w", 11, "0xd1", [Credit("k1", 500, "0xd1:1")]) == 1
    assert ledger.balance("k1") == 500


def test_migrations_apply_once(ledger_url: str) -> None:
    Ledger(ledger_url).close()
    led = Ledger(ledger_url)
    try:
        versions = [v for (v,) in led.db.query("SELECT version FROM schema_migrations")]
        assert sorted(versions) == sorted(set(versions)) and max(versions) >= 3
    finally:
        led.close()


WRITERS, CHARGES_EACH = 8, 25


def test_concurrent_charges_lose_no_update(ledger_url: str) -> None:
    """N replicas (own connections) charge one key at once: the balance is exact."""
    setup = Ledger(ledger_url)
    setup.credit("hot", 10**12, "dep")
    plan = Plan("burst", "month", tokens_per_period=3_000, price_rao=0)
    setup.buy_plan("hot", plan, "buy")
    errors: list[BaseException] = []
    barrier = threading.Barrier(WRITERS)

    def writer(n: int) -> None:
        led = Ledger(ledger_url)
        try:
            barrier.wait()
            for i in range(CHARGES_EACH):
                led.charge("hot", "m", 10, 7, f"w{n}-{i}", PRICE)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)
        finally:
            led.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.perf_counter() - start
    assert errors == []
    total = WRITERS * CHARGES_EACH
    usage = [e for e in setup.entries("hot", limit=10_000) if e.kind == "usage"]
    assert len(usage) == total
    # the plan covered exactly 3,000 tokens; every other token was paid for
    assert sum(e.plan_tokens for e in usage) == 3_000
    paid = sum(-e.amount_rao for e in usage)
    assert setup.balance("hot") == 10**12 - paid == entry_sum(setup, "hot")
    print(f"\n{setup.db.engine}: {total} concurrent charges by {WRITERS} writers "
          f"in {elapsed:.2f}s, balance exact")
    setup.close()
