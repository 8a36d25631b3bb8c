"""Subscription plans: a periodic token quota bought from the prepaid balance.

A plan gives ``tokens_per_period`` tokens per UTC day or calendar month for
``term_periods`` periods, for ``price_rao`` paid once at purchase. The quota resets at
each period boundary (UTC midnight / the first of the month); unused tokens do not
carry over. While a plan is active its quota is used first; tokens beyond it are
charged to the balance at the model's price (prompt tokens are covered first, then
completion tokens). A price-0 plan is how an operator configures a free tier; there is
none by default.

Everything here is pure: time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from chutes_subnet.billing.prices import MAX_TOKENS, parse_rao

__all__ = ["PERIODS", "Plan", "period_key", "plan_expiry", "split_covered"]

PERIODS = ("day", "month")
_MAX_TERM = 120
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class Plan:
    """A purchasable plan (operator configuration)."""

    plan_id: str
    period: str
    tokens_per_period: int
    price_rao: int
    term_periods: int = 1

    def __post_init__(self) -> None:
        if not self.plan_id or len(self.plan_id) > 64 or not set(self.plan_id) <= _NAME_CHARS:
            raise ValueError("plan id must be 1..64 of [a-z0-9-_]")
        if self.period not in PERIODS:
            raise ValueError(f"plan period must be one of {', '.join(PERIODS)}")
        if isinstance(self.tokens_per_period, bool) or not isinstance(self.tokens_per_period, int) \
                or not 0 < self.tokens_per_period <= MAX_TOKENS:
            raise ValueError(f"tokens_per_period must be an integer in 1..{MAX_TOKENS}")
        parse_rao(self.price_rao, "price_rao")
        if isinstance(self.term_periods, bool) or not isinstance(self.term_periods, int) \
                or not 0 < self.term_periods <= _MAX_TERM:
            raise ValueError(f"term_periods must be an integer in 1..{_MAX_TERM}")


def period_key(period: str, now: float) -> str:
    """The quota period ``now`` falls in: ``"2026-12-02"`` (day) or ``"2026-12"`` (month)."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "day":
        return t.strftime("%Y-%m-%d")
    if period == "month":
        return t.strftime("%Y-%m")
    raise ValueError(f"unknown plan period {period!r}")


def plan_expiry(plan: Plan, start: float) -> float:
    """When a plan bought at ``start`` ends: the end of its last UTC period."""
    t = datetime.fromtimestamp(start, UTC)
    if plan.period == "day":
        first = datetime(t.year, t.month, t.day, tzinfo=UTC).timestamp()
        return first + plan.term_periods * 86_400.0
    month = t.month - 1 + plan.term_periods
    year, month = t.year + month // 12, month % 12 + 1
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


def split_covered(prompt: int, completion: int, remaining: int) -> tuple[int, int, int]:
    """Cover up to ``remaining`` plan tokens (prompt first); returns
    ``(used_from_plan, uncovered_prompt, uncovered_completion)``."""
    remaining = max(0, remaining)
    cover_p = min(prompt, remaining)
    cover_c = min(completion, remaining - cover_p)
    return cover_p + cover_c, prompt - cover_p, completion - cover_c
