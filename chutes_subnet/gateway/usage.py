"""Usage metering per API key: requests and tokens in/out, persisted in SQLite.

The gateway never sees plaintext, so token counts come from the miner's plaintext usage
report (the ``X-E2E-Usage`` header of a non-stream response, the ``data: {"usage": ..}``
event of a stream). Counts are accumulated in memory and written in one transaction per
``flush()`` (the gateway flushes about once a second and on shutdown), which keeps
SQLite off the request path. Rows are per (key, UTC day) so operators can bill by day;
the quota check uses the lifetime sum.

Several replicas may share one file: each adds its own deltas (``UPSERT ... +=``) and
re-reads the totals on flush, so a quota is enforced with at most one flush interval
of lag across replicas.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["Usage", "UsageMeter", "MemoryUsageMeter", "SQLiteUsageMeter"]


@dataclass(frozen=True)
class Usage:
    """Totals for one key."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.requests + other.requests, self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens)


class UsageMeter(Protocol):
    """What the gateway needs from metering."""

    def record(self, key_id: str, prompt_tokens: int, completion_tokens: int,
               requests: int = 1) -> None: ...

    def totals(self, key_id: str) -> Usage: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _clean(n: int) -> int:
    # Counts come from an untrusted miner report: clamp to a sane non-negative range.
    return max(0, min(int(n), 1 << 40))


class MemoryUsageMeter:
    """Totals in a dict (tests, demos)."""

    def __init__(self) -> None:
        self._totals: dict[str, Usage] = {}
        self._lock = threading.Lock()

    def record(self, key_id: str, prompt_tokens: int, completion_tokens: int,
               requests: int = 1) -> None:
        """Add one request's counts."""
        delta = Usage(_clean(requests), _clean(prompt_tokens), _clean(completion_tokens))
        with self._lock:
            self._totals[key_id] = self._totals.get(key_id, Usage()) + delta

    def totals(self, key_id: str) -> Usage:
        """Lifetime totals of a key."""
        return self._totals.get(key_id, Usage())

    def flush(self) -> None:
        """Nothing to persist."""

    def close(self) -> None:
        """Nothing to release."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    key_id            TEXT NOT NULL,
    day               TEXT NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day)
);
"""


class SQLiteUsageMeter:
    """Per-(key, day) counters in SQLite with in-memory batching."""

    def __init__(self, path: str | Path) -> None:
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=5.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._conn.commit()
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Usage] = {}
        self._base: dict[str, Usage] = self._read_totals()

    def _read_totals(self) -> dict[str, Usage]:
        rows = self._conn.execute(
            "SELECT key_id, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens)"
            " FROM usage GROUP BY key_id"
        ).fetchall()
        return {k: Usage(int(r), int(p), int(c)) for k, r, p, c in rows}

    def record(self, key_id: str, prompt_tokens: int, completion_tokens: int,
               requests: int = 1) -> None:
        """Add one request's counts (persisted at the next :meth:`flush`)."""
        delta = Usage(_clean(requests), _clean(prompt_tokens), _clean(completion_tokens))
        slot = (key_id, time.strftime("%Y-%m-%d", time.gmtime()))
        with self._lock:
            self._pending[slot] = self._pending.get(slot, Usage()) + delta

    def totals(self, key_id: str) -> Usage:
        """Lifetime totals: persisted sum plus not yet flushed counts."""
        with self._lock:
            total = self._base.get(key_id, Usage())
            for (k, _day), u in self._pending.items():
                if k == key_id:
                    total = total + u
        return total

    def flush(self) -> None:
        """Write pending counts in one transaction and refresh totals from disk."""
        with self._lock:
            pending, self._pending = self._pending, {}
            try:
                with self._conn:
                    self._conn.executemany(
                        "INSERT INTO usage (key_id, day, requests, prompt_tokens,"
                        " completion_tokens) VALUES (?, ?, ?, ?, ?)"
                        " ON CONFLICT (key_id, day) DO UPDATE SET"
                        " requests = requests + excluded.requests,"
                        " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
                        " completion_tokens = completion_tokens + excluded.completion_tokens",
                        [(k, d, u.requests, u.prompt_tokens, u.completion_tokens)
                         for (k, d), u in pending.items()],
                    )
            except sqlite3.Error:
                # Keep the counts for the next attempt rather than losing billing data.
                for slot, u in pending.items():
                    self._pending[slot] = self._pending.get(slot, Usage()) + u
                raise
            self._base = self._read_totals()

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        with self._lock:
            self._conn.close()
