"""The score table: what an operator looks at first.

Built from a committed :class:`StateSnapshot` (so ``chutes-subnet scores`` can read
the state file of a running validator) and printed as fixed-width text or JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .state import StateSnapshot

__all__ = ["ScoreRow", "build_score_table", "format_score_table", "score_table_json"]


@dataclass(frozen=True)
class ScoreRow:
    """One uid in the table."""

    uid: int
    hotkey: str
    attested: bool
    simulated: bool
    reason: str | None
    tokens_per_s: float
    ttft_s: float | None
    success_rate: float
    ema: float
    weight: float


def build_score_table(snapshot: StateSnapshot) -> list[ScoreRow]:
    """One row per uid with a score or a last result, ordered by uid."""
    rows: list[ScoreRow] = []
    for uid in sorted(set(snapshot.scores) | set(snapshot.results)):
        entry = snapshot.scores.get(uid)
        result = snapshot.results.get(uid, {})
        att = result.get("attestation") or {}
        hotkey = entry.hotkey if entry else str(result.get("hotkey", ""))
        if entry and result.get("hotkey") not in (None, hotkey):
            result, att = {}, {}  # last result belongs to a previous hotkey at this uid
        rows.append(ScoreRow(
            uid=uid,
            hotkey=hotkey,
            attested=bool(result.get("attested", False)),
            simulated=bool(att.get("simulated", False)),
            reason=result.get("reason"),
            tokens_per_s=float(result.get("tokens_per_s", 0.0) or 0.0),
            ttft_s=result.get("ttft_s"),
            success_rate=float(result.get("success_rate", 0.0) or 0.0),
            ema=entry.ema if entry else 0.0,
            weight=snapshot.weights.get(uid, 0.0),
        ))
    return rows


def _short(hotkey: str) -> str:
    return hotkey if len(hotkey) <= 12 else f"{hotkey[:6]}..{hotkey[-4:]}"


def format_score_table(rows: list[ScoreRow], *, round_index: int | None = None) -> str:
    """Fixed-width text table (one line per uid, a header, and a totals line)."""
    head = (f"{'uid':>4}  {'hotkey':<12}  {'attested':<9} {'reason':<32} {'tok/s':>8} "
            f"{'TTFT ms':>8} {'ok %':>5} {'EMA':>7} {'weight':>7}")
    lines = [f"round {round_index}" if round_index is not None else "", head, "-" * len(head)]
    for r in rows:
        attested = ("sim" if r.simulated else "yes") if r.attested else "no"
        ttft = f"{r.ttft_s * 1000:.0f}" if r.ttft_s is not None else "-"
        lines.append(
            f"{r.uid:>4}  {_short(r.hotkey):<12}  {attested:<9} {(r.reason or '-')[:32]:<32} "
            f"{r.tokens_per_s:>8.1f} {ttft:>8} {r.success_rate * 100:>5.0f} {r.ema:>7.4f} "
            f"{r.weight:>7.4f}")
    total = sum(r.weight for r in rows)
    lines.append(f"{len(rows)} uids, {sum(1 for r in rows if r.weight > 0)} weighted, "
                 f"weights sum {total:.4f}")
    return "\n".join(line for line in lines if line)


def score_table_json(rows: list[ScoreRow]) -> str:
    """The rows as one JSON array."""
    return json.dumps([asdict(r) for r in rows], separators=(",", ":"))
