"""The prepaid ledger: balances, an append-only journal, plans, deposit addresses and
the chain cursor, on SQLite (embedded default) or PostgreSQL (fleets).

Invariants, each kept inside one database transaction:

* every change of a balance has exactly one journal entry, and ``balance`` always
  equals the sum of the key's entries (``entries.amount_rao`` is signed);
* every entry has a unique ``ref`` (deposit: block hash + event index; usage: the
  request's receipt/request id; plan purchase: caller's id), so replaying any input
  (a chain event delivered twice, a retried charge) changes nothing;
* a usage charge records the usage and debits the balance in the same transaction;
  concurrent charges on one key serialize on the database's row/file lock, so no
  update is lost (tested with N writers on both backends);
* a block's deposits, its hash and the cursor move together: after a crash the
  watcher resumes at the first block not fully applied.

Amounts are integers in rao, bounded by :data:`~chutes_subnet.billing.prices.MAX_RAO`.
A charge may take a balance below zero by at most one answer (the price is known only
after the answer); admission refuses a key whose balance is not positive and that has
no plan quota left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from chutes_subnet.billing.plans import Plan, period_key, plan_expiry, split_covered
from chutes_subnet.billing.prices import MAX_RAO, TokenPrice, cost_rao, parse_rao
from chutes_subnet.stores.database import Database, Transaction, open_database

__all__ = [
    "Admission",
    "Charge",
    "Credit",
    "Entry",
    "InsufficientBalance",
    "Ledger",
    "Subscription",
]

class InsufficientBalance(ValueError):
    """A purchase needs more than the key's balance."""


@dataclass(frozen=True)
class Entry:
    """One journal entry (signed amount: credits positive, debits negative)."""

    id: int
    key_id: str
    kind: str
    amount_rao: int
    ref: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    plan_tokens: int
    block_number: int | None
    created_at: float


@dataclass(frozen=True)
class Credit:
    """A deposit found on chain, to be credited to ``key_id``."""

    key_id: str
    amount_rao: int
    ref: str  #: ``"<block_hash>:<event_index>"``, unique on chain


@dataclass(frozen=True)
class Charge:
    """Outcome of charging one answer."""

    cost_rao: int
    plan_tokens: int
    balance_rao: int
    duplicate: bool = False


@dataclass(frozen=True)
class Subscription:
    """A key's plan and what is left of the current period."""

    plan_id: str
    period: str
    quota: int
    expires_at: float
    period_key: str
    used_tokens: int

    def remaining(self, now: float) -> int:
        """Plan tokens left right now (0 when expired)."""
        if now >= self.expires_at:
            return 0
        used = self.used_tokens if self.period_key == period_key(self.period, now) else 0
        return max(0, self.quota - used)


@dataclass(frozen=True)
class Admission:
    """Whether a key may start a request, and why not."""

    allowed: bool
    balance_rao: int
    plan_tokens_left: int


_ENTRY_COLUMNS = ("id, key_id, kind, amount_rao, ref, model, prompt_tokens, completion_tokens, "
                  "plan_tokens, block_number, created_at")


class Ledger:
    """Balances and everything that moves them, in one SQL database."""

    def __init__(self, db: Database | str) -> None:
        """On an open :class:`~chutes_subnet.stores.database.Database` (the gateway's, so
        usage and charges share one engine) or a URL / SQLite path (migrated on open)."""
        self.db = open_database(db) if isinstance(db, str) else db
        self._owns_db = isinstance(db, str)
        self._for_update = " FOR UPDATE" if self.db.engine == "postgresql" else ""

    @property
    def blocking(self) -> bool:
        """True when calls may wait on the network (keep them off the event loop)."""
        return bool(self.db.blocking)

    # --- reads -------------------------------------------------------------------

    def balance(self, key_id: str) -> int:
        """Current balance in rao (0 for a key never credited)."""
        rows = self.db.query("SELECT balance_rao FROM accounts WHERE key_id = ?", (key_id,))
        return int(rows[0][0]) if rows else 0

    def subscription(self, key_id: str) -> Subscription | None:
        """The key's plan record, if it ever bought one."""
        with self.db.transaction() as tx:
            return self._subscription_in(tx, key_id, lock=False)

    def admission(self, key_id: str, now: float | None = None) -> Admission:
        """Admit a request when the balance is positive or plan quota remains."""
        now = time.time() if now is None else now
        sub = self.subscription(key_id)
        left = sub.remaining(now) if sub else 0
        balance = self.balance(key_id)
        return Admission(balance > 0 or left > 0, balance, left)

    def entries(self, key_id: str | None = None, limit: int = 100) -> list[Entry]:
        """Newest entries first (of one key, or of all keys)."""
        limit = max(1, min(int(limit), 10_000))
        if key_id is None:
            rows = self.db.query(f"SELECT {_ENTRY_COLUMNS} FROM entries ORDER BY id DESC LIMIT ?",  # noqa: S608 - column list and lock suffix are constants; values are bound
                                 (limit,))
        else:
            rows = self.db.query(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE key_id = ?"  # noqa: S608 - column list and lock suffix are constants; values are bound
                                 " ORDER BY id DESC LIMIT ?", (key_id, limit))
        return [Entry(*r) for r in rows]

    def totals(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        """Sum of amounts per entry kind in ``[since, until)`` (for reports and burns)."""
        until = min(until, 1e18)
        rows = self.db.query("SELECT kind, SUM(amount_rao) FROM entries WHERE created_at >= ?"
                             " AND created_at < ? GROUP BY kind", (since, until))
        return {str(kind): int(total) for kind, total in rows}

    # --- money in ----------------------------------------------------------------

    def credit(self, key_id: str, amount_rao: int, ref: str, *, kind: str = "deposit",
               block_number: int | None = None, now: float | None = None) -> bool:
        """Add ``amount_rao``; False (and nothing changed) if ``ref`` was seen before."""
        with self.db.transaction() as tx:
            return self._credit(tx, Credit(key_id, amount_rao, ref), kind, block_number,
                                time.time() if now is None else now)

    def _credit(self, tx: Transaction, credit: Credit, kind: str, block_number: int | None,
                now: float) -> bool:
        amount = parse_rao(credit.amount_rao, "credit amount")
        if not tx.execute("INSERT INTO entries (key_id, kind, amount_rao, ref, block_number,"
                          " created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ref) DO NOTHING"
                          " RETURNING id",
                          (credit.key_id, kind, amount, credit.ref, block_number, now)):
            return False
        self._add_balance(tx, credit.key_id, amount)
        return True

    def _add_balance(self, tx: Transaction, key_id: str, delta: int) -> int:
        tx.execute("INSERT INTO accounts (key_id, balance_rao) VALUES (?, 0)"
                   " ON CONFLICT (key_id) DO NOTHING", (key_id,))
        balance = int(tx.execute("UPDATE accounts SET balance_rao = balance_rao + ?"
                                 " WHERE key_id = ? RETURNING balance_rao", (delta, key_id))[0][0])
        if not -MAX_RAO <= balance <= MAX_RAO:
            raise ValueError(f"balance of {key_id} would leave the bounded range")
        return balance

    # --- money out ---------------------------------------------------------------

    def charge(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int,
               ref: str, price: TokenPrice, now: float | None = None) -> Charge:
        """Record one answer's usage and debit its cost, plan quota first (idempotent)."""
        now = time.time() if now is None else now
        cost_rao(prompt_tokens, completion_tokens, price)  # bounds-check before writing
        with self.db.transaction() as tx:
            if not tx.execute("INSERT INTO entries (key_id, kind, amount_rao, ref, model,"
                              " prompt_tokens, completion_tokens, created_at)"
                              " VALUES (?, 'usage', 0, ?, ?, ?, ?, ?)"
                              " ON CONFLICT (ref) DO NOTHING RETURNING id",
                              (key_id, ref, model, prompt_tokens, completion_tokens, now)):
                return Charge(0, 0, self._balance_in(tx, key_id), duplicate=True)
            covered, prompt_left, completion_left = self._use_plan(
                tx, key_id, prompt_tokens, completion_tokens, now)
            cost = cost_rao(prompt_left, completion_left, price)
            tx.execute("UPDATE entries SET amount_rao = ?, plan_tokens = ? WHERE ref = ?",
                       (-cost, covered, ref))
            balance = self._add_balance(tx, key_id, -cost)
        return Charge(cost, covered, balance)

    def _balance_in(self, tx: Transaction, key_id: str) -> int:
        rows = tx.execute("SELECT balance_rao FROM accounts WHERE key_id = ?", (key_id,))
        return int(rows[0][0]) if rows else 0

    def _subscription_in(self, tx: Transaction, key_id: str, lock: bool) -> Subscription | None:
        rows = tx.execute("SELECT plan_id, period, quota, expires_at, period_key, used_tokens"  # noqa: S608 - column list and lock suffix are constants; values are bound
                          " FROM subscriptions WHERE key_id = ?"
                          + (self._for_update if lock else ""), (key_id,))
        return _subscription(rows[0]) if rows else None

    def _use_plan(self, tx: Transaction, key_id: str, prompt: int, completion: int,
                  now: float) -> tuple[int, int, int]:
        sub = self._subscription_in(tx, key_id, lock=True)
        if sub is None:
            return 0, prompt, completion
        covered, p_left, c_left = split_covered(prompt, completion, sub.remaining(now))
        if covered:
            current = period_key(sub.period, now)
            used = (sub.used_tokens if sub.period_key == current else 0) + covered
            tx.execute("UPDATE subscriptions SET period_key = ?, used_tokens = ? WHERE key_id = ?",
                       (current, used, key_id))
        return covered, p_left, c_left

    def buy_plan(self, key_id: str, plan: Plan, ref: str, now: float | None = None) -> Subscription:
        """Pay ``plan.price_rao`` from the balance and start the plan now (replacing any
        current plan). Raises :class:`InsufficientBalance`; idempotent on ``ref``."""
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO accounts (key_id, balance_rao) VALUES (?, 0)"
                       " ON CONFLICT (key_id) DO NOTHING", (key_id,))
            balance = int(tx.execute("SELECT balance_rao FROM accounts WHERE key_id = ?"  # noqa: S608 - column list and lock suffix are constants; values are bound
                                     + self._for_update, (key_id,))[0][0])
            if not tx.execute("SELECT 1 FROM entries WHERE ref = ?", (ref,)):
                if balance < plan.price_rao:
                    raise InsufficientBalance(
                        f"plan {plan.plan_id} costs {plan.price_rao} rao; balance is {balance}")
                tx.execute("INSERT INTO entries (key_id, kind, amount_rao, ref, model, created_at)"
                           " VALUES (?, 'plan', ?, ?, ?, ?)",
                           (key_id, -plan.price_rao, ref, plan.plan_id, now))
                self._add_balance(tx, key_id, -plan.price_rao)
                sub = Subscription(plan.plan_id, plan.period, plan.tokens_per_period,
                                   plan_expiry(plan, now), period_key(plan.period, now), 0)
                tx.execute("DELETE FROM subscriptions WHERE key_id = ?", (key_id,))
                tx.execute("INSERT INTO subscriptions (key_id, plan_id, period, quota, expires_at,"
                           " period_key, used_tokens) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (key_id, sub.plan_id, sub.period, sub.quota, sub.expires_at,
                            sub.period_key, sub.used_tokens))
            current = self._subscription_in(tx, key_id, lock=False)
        if current is None:  # written in the same transaction just above
            raise RuntimeError("subscription missing right after it was written")
        return current

    # --- deposit addresses and the chain cursor -----------------------------------

    def assign_address(self, key_id: str, address: str) -> str:
        """Record ``address`` as ``key_id``'s deposit address (first assignment wins)."""
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO deposit_addresses (address, key_id) VALUES (?, ?)"
                       " ON CONFLICT DO NOTHING", (address, key_id))
            rows = tx.execute("SELECT address FROM deposit_addresses WHERE key_id = ?", (key_id,))
        if not rows:
            raise ValueError(f"deposit address {address} already belongs to another key")
        return str(rows[0][0])

    def deposit_addresses(self) -> dict[str, str]:
        """``{address: key_id}`` for every key that has one."""
        return {str(a): str(k) for a, k in self.db.query("SELECT address, key_id"
                                                         " FROM deposit_addresses")}

    def last_block(self, watcher: str) -> tuple[int, str] | None:
        """Highest block the watcher applied, with its hash."""
        rows = self.db.query("SELECT block_number, block_hash FROM chain_blocks WHERE watcher = ?"
                             " ORDER BY block_number DESC LIMIT 1", (watcher,))
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def block_hash(self, watcher: str, block_number: int) -> str | None:
        """The hash the watcher recorded for ``block_number``."""
        rows = self.db.query("SELECT block_hash FROM chain_blocks WHERE watcher = ?"
                             " AND block_number = ?", (watcher, block_number))
        return str(rows[0][0]) if rows else None

    def apply_block(self, watcher: str, block_number: int, block_hash: str,
                    credits: list[Credit], now: float | None = None) -> int:
        """Credit a block's deposits and advance the cursor, atomically; returns how
        many credits were new (a replayed block credits nothing twice)."""
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            fresh = sum(self._credit(tx, c, "deposit", block_number, now) for c in credits)
            tx.execute("INSERT INTO chain_blocks (watcher, block_number, block_hash)"
                       " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                       (watcher, block_number, block_hash))
        return fresh

    def revert_blocks_from(self, watcher: str, block_number: int,
                           now: float | None = None) -> int:
        """Undo deposits of blocks >= ``block_number`` (they left the canonical chain);
        returns the rao reverted. Each reversal is its own journal entry, and the
        orphaned entries' refs are retired so the same transfers can be credited again
        if the new fork includes them."""
        now = time.time() if now is None else now
        reverted = 0
        with self.db.transaction() as tx:
            rows = tx.execute("SELECT id, key_id, amount_rao, ref, block_number FROM entries"
                              " WHERE kind = 'deposit' AND block_number >= ? AND ref NOT LIKE ?",
                              (block_number, _ORPHANED_PATTERN))
            for entry_id, key_id, amount, ref, number in rows:
                tx.execute("INSERT INTO entries (key_id, kind, amount_rao, ref, block_number,"
                           " created_at) VALUES (?, 'deposit_reverted', ?, ?, ?, ?)",
                           (key_id, -int(amount), f"{ref}{_ORPHANED}{entry_id}:revert", number,
                            now))
                tx.execute("UPDATE entries SET ref = ? WHERE id = ?",
                           (f"{ref}{_ORPHANED}{entry_id}", entry_id))
                self._add_balance(tx, key_id, -int(amount))
                reverted += int(amount)
            tx.execute("DELETE FROM chain_blocks WHERE watcher = ? AND block_number >= ?",
                       (watcher, block_number))
        return reverted

    # --- buy-back and burn audit ---------------------------------------------------

    def record_burn(self, outcome: str, collected_rao: int, amount_rao: int, message: str,
                    block_number: int | None = None, extrinsic: str | None = None,
                    now: float | None = None) -> None:
        """Append one line to the burn audit log (never updated or deleted)."""
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO burn_audit (at, outcome, collected_rao, amount_rao,"
                       " block_number, extrinsic, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (time.time() if now is None else now, outcome, collected_rao,
                        amount_rao, block_number, extrinsic, message[:500]))

    def burn_audit(self, limit: int = 100) -> list[tuple[Any, ...]]:
        """Newest audit lines first."""
        return [tuple(r) for r in self.db.query(
            "SELECT at, outcome, collected_rao, amount_rao, block_number, extrinsic, message"
            " FROM burn_audit ORDER BY id DESC LIMIT ?", (max(1, min(int(limit), 10_000)),))]

    def burned_rao(self) -> int:
        """Rao spent by submitted burns so far."""
        rows = self.db.query("SELECT COALESCE(SUM(amount_rao), 0) FROM burn_audit"
                             " WHERE outcome = 'submitted'")
        return int(rows[0][0])

    def close(self) -> None:
        """Close the database connection (only when this ledger opened it)."""
        if self._owns_db:
            self.db.close()


_ORPHANED = ":orphaned:"
_ORPHANED_PATTERN = f"%{_ORPHANED}%"


def _subscription(row: Any) -> Subscription:
    plan_id, period, quota, expires_at, key, used = row
    return Subscription(str(plan_id), str(period), int(quota), float(expires_at), str(key),
                        int(used))
