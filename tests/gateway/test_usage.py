"""The SQLite usage meter: batched writes, persisted and shared across instances."""

from __future__ import annotations

from pathlib import Path

from chutes_subnet.gateway.usage import SQLiteUsageMeter


def test_usage_batches_and_persists_across_instances(tmp_path: Path) -> None:
    a, b = SQLiteUsageMeter(tmp_path / "u.db"), SQLiteUsageMeter(tmp_path / "u.db")
    a.record("k", 10, 5)
    a.record("k", 1, -7)  # negative counts from a miner are clamped
    assert a.totals("k").total_tokens == 16 and b.totals("k").requests == 0
    a.flush()
    b.record("k", 2, 2)
    b.flush()
    assert b.totals("k").requests == 3 and b.totals("k").total_tokens == 20
    a.close()
    assert SQLiteUsageMeter(tmp_path / "u.db").totals("k").prompt_tokens == 13


def test_today_follows_the_utc_day_across_midnight(monkeypatch) -> None:
    from chutes_subnet.gateway import usage

    midnight = 1_767_225_600  # 2026-01-01T00:00:00Z
    monkeypatch.setattr(usage.time, "time", lambda: midnight - 0.001)
    assert usage._today() == "2025-12-31"
    monkeypatch.setattr(usage.time, "time", lambda: float(midnight))
    assert usage._today() == "2026-01-01"
