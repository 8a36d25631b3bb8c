"""Operator files of the payment gate: plans (TOML) and the deposit master seed.

Plans file::

    [plans.daily-1m]
    period = "day"              # "day" (UTC) or "month"
    tokens_per_period = 1_000_000
    price_rao = 500_000_000     # 0.5 TAO, paid once from the balance
    term_periods = 30           # the plan runs 30 days

Seed file: 64 hex characters (32 bytes), readable by its owner only (mode 0600);
anything else is refused, because whoever reads it can sweep every deposit address.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

from chutes_subnet.billing.plans import Plan

__all__ = ["load_plans", "load_seed"]


def load_plans(path: str | Path) -> dict[str, Plan]:
    """``{plan_id: Plan}`` from a plans file; problems are one ``ValueError`` line."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        tables = data.get("plans", {})
        if set(data) - {"plans"} or not isinstance(tables, dict):
            raise ValueError("the file must hold only [plans.<id>] tables")
        plans = {}
        for plan_id, table in tables.items():
            if not isinstance(table, dict):
                raise ValueError(f"[plans.{plan_id}] must be a table")  # operator input: ValueError
            unknown = set(table) - {"period", "tokens_per_period", "price_rao", "term_periods"}
            if unknown:
                raise ValueError(f"[plans.{plan_id}] has unknown key(s) {', '.join(sorted(unknown))}")
            plans[plan_id] = Plan(plan_id=plan_id, **table)
        return plans
    except OSError as exc:
        raise ValueError(f"cannot read plans file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"bad plans file {path}: {exc}") from None


def load_seed(path: str | Path) -> bytes:
    """The deposit master seed from an owner-only file of 64 hex characters."""
    try:
        info = os.stat(path)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(f"deposit seed file {path} is readable by others: chmod 600 it")
        text = Path(path).read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ValueError(f"cannot read deposit seed file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        text = ""
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ValueError(f"deposit seed file {path} must hold 64 hex characters (32 bytes)")
    return seed
