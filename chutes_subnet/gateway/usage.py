"""Usage metering per API key: requests and tokens in/out, persisted in SQL.

The gateway never sees plaintext, so token counts come from the miner's plaintext usage
report (the ``X-E2E-Usage`` header of a non-stream response, the ``data: {"usage": ..}``
event of a stream). Rows are per (key, UTC day) so operators can bill by day; the quota
check uses the lifetime sum.

Several replicas may share one database (a SQLite file on one host, PostgreSQL across
hosts): each adds its own deltas (``UPSERT ... +=``) and re-reads the totals on flush,
so a quota is enforced with at most one flush interval of lag across replicas.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from chutes_subnet.errors import StoreUnavailable
from chutes_subnet.stores.database import Database, SQLiteDatabase

__all__ = ["MemoryUsageMeter", "SQLUsageMeter", "SQLiteUsageMeter", "Usage", "UsageMeter"]


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


_UPSERT = (
    "INSERT INTO usage (key_id, day, requests, prompt_tokens, completion_tokens)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id, day) DO UPDATE SET"
    " requests = usage.requests + excluded.requests,"
    " prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = usage.completion_tokens + excluded.completion_tokens"
)
_TOTALS = "SELECT key_id, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens) FROM usage"
#: keys whose totals one refresh reads back per statement
_REFRESH_CHUNK = 500
#: keys a replica keeps totals for (least recently seen dropped first)
_MAX_TRACKED_KEYS = 100_000


#: (UTC day number, its ISO date): formatting a date per request is measurable CPU
_day: tuple[int, str] = (-1, "")


def _today() -> str:
    """Today's UTC date, ``YYYY-MM-DD``."""
    global _day
    day = int(time.time() // 86400)
    if day != _day[0]:
        _day = (day, time.strftime("%Y-%m-%d", time.gmtime(day * 86400)))
    return _day[1]


class SQLUsageMeter:
    """Per-(key, UTC day) counters in a SQL database (SQLite or PostgreSQL).

    Two write modes:

    * batched (``write_through=False``, the SQLite default): :meth:`record` adds to
      memory and :meth:`flush` writes every pending count in one transaction;
    * write-through (the PostgreSQL default): :meth:`record` commits its row before
      it returns, so a replica killed at any moment has lost no served request's
      usage. The gateway calls it off its event loop, before the response's last byte.
      A failed write is kept in memory and retried by the next :meth:`flush`.

    Totals are kept per key this replica has seen: read once on first sight, then
    refreshed from the database by every :meth:`flush`, so several replicas sharing
    one database see each other's usage within one flush interval.
    """

    def __init__(self, db: Database, *, write_through: bool | None = None,
                 owns_db: bool = False) -> None:
        self.db = db
        self.write_through = db.engine == "postgresql" if write_through is None else write_through
        #: calls may wait on the network (the gateway calls them off its event loop)
        self.blocking = db.blocking
        self._owns_db = owns_db
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Usage] = {}
        self._base: dict[str, Usage] = {}

    def record(self, key_id: str, prompt_tokens: int, completion_tokens: int,
               requests: int = 1) -> None:
        """Add one request's counts (committed now when write-through)."""
        delta = Usage(_clean(requests), _clean(prompt_tokens), _clean(completion_tokens))
        slot = (key_id, _today())
        if self.write_through:
            try:
                with self.db.transaction() as tx:
                    tx.execute(_UPSERT, (key_id, slot[1], delta.requests, delta.prompt_tokens,
                                         delta.completion_tokens))
            except StoreUnavailable:
                pass  # kept below as pending; the next flush retries it
            else:
                with self._lock:
                    if key_id in self._base:
                        self._base[key_id] = self._base[key_id] + delta
                return
        with self._lock:
            prev = self._pending.get(slot)
            self._pending[slot] = delta if prev is None else prev + delta

    def peek(self, key_id: str) -> Usage | None:
        """:meth:`totals` when this replica already tracks ``key_id`` (no I/O), else None."""
        with self._lock:
            if key_id not in self._base:
                return None
        return self.totals(key_id)

    def totals(self, key_id: str) -> Usage:
        """Lifetime totals: persisted sum plus not yet written counts (the first call
        for a key reads it from the database)."""
        with self._lock:
            base = self._base.get(key_id)
        if base is None:
            base = self._read([key_id]).get(key_id, Usage())
            with self._lock:
                if len(self._base) >= _MAX_TRACKED_KEYS:
                    self._base.clear()
                self._base.setdefault(key_id, base)
                base = self._base[key_id]
        with self._lock:
            for (k, _day), u in self._pending.items():
                if k == key_id:
                    base = base + u
        return base

    def _read(self, key_ids: list[str]) -> dict[str, Usage]:
        out: dict[str, Usage] = {}
        for i in range(0, len(key_ids), _REFRESH_CHUNK):
            chunk = key_ids[i:i + _REFRESH_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self.db.query(f"{_TOTALS} WHERE key_id IN ({marks}) GROUP BY key_id", chunk)
            out.update({k: Usage(int(r), int(p), int(c)) for k, r, p, c in rows})
        return out

    def flush(self) -> None:
        """Write pending counts in one transaction, then re-read the tracked totals."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            try:
                with self.db.transaction() as tx:
                    tx.executemany(_UPSERT, [(k, d, u.requests, u.prompt_tokens,
                                              u.completion_tokens)
                                             for (k, d), u in pending.items()])
            except BaseException:
                # Keep the counts for the next attempt rather than losing billing data.
                with self._lock:
                    for slot, u in pending.items():
                        self._pending[slot] = self._pending.get(slot, Usage()) + u
                raise
        with self._lock:
            tracked = list(self._base)
        fresh = self._read(tracked)
        with self._lock:
            for k in tracked:
                if k in self._base:
                    self._base[k] = fresh.get(k, Usage())

    def close(self) -> None:
        """Flush, and close the database if this meter opened it."""
        try:
            self.flush()
        finally:
            if self._owns_db:
                self.db.close()


class SQLiteUsageMeter(SQLUsageMeter):
    """Usage in a SQLite file (the embedded default), batched."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(SQLiteDatabase(path), write_through=False, owns_db=True)
