"""A bounded record of what the gateway saw for each routed request.

Exactly the gateway's view in the visibility model: ids, a nonce prefix, byte sizes,
the plaintext usage the miner reported, status and timing — never content (the
gateway has none). Each API key can read back its own entries (``GET /v1/requests``),
which lets a user audit what the router learned about their traffic.

* :class:`RequestJournal` — the last N entries in memory (one process).
* :class:`SQLJournal` — rows in the shared database (SQLite or PostgreSQL), so a key
  reads the same journal from every replica. Appends are buffered and written in one
  statement per flush (the gateway flushes about once a second); rows older than the
  retention window are pruned. The journal is an audit view, not the bill: a replica
  killed between flushes loses at most its last second of entries, never usage.
"""

from __future__ import annotations

import operator
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from chutes_subnet.stores.database import Database

__all__ = ["Journal", "JournalEntry", "RequestJournal", "SQLJournal"]


@dataclass(slots=True)
class JournalEntry:
    """One request as the gateway saw it. Built once per routed request (not frozen: a
    frozen dataclass's 14 guarded field sets cost ~1.2 us more on the hot path); nothing
    changes an entry after it is recorded."""

    at: float
    key_id: str
    chute_id: str
    instance_id: str
    nonce_prefix: str
    e2e_version: int
    stream: bool
    request_bytes: int
    response_bytes: int
    prompt_tokens: int
    completion_tokens: int
    status: int
    duration_ms: float
    #: the miner broke off after the response started (the client saw an error event)
    interrupted: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Journal(Protocol):
    """Where the gateway records and reads back requests."""

    def record(self, entry: JournalEntry) -> None: ...

    def recent(self, key_id: str, limit: int = 50) -> list[JournalEntry]: ...

    def flush(self) -> None: ...


class RequestJournal:
    """The last ``maxlen`` entries (oldest dropped first); thread-safe appends."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._entries: deque[JournalEntry] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def record(self, entry: JournalEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def recent(self, key_id: str, limit: int = 50) -> list[JournalEntry]:
        """Newest first, only ``key_id``'s entries."""
        with self._lock:
            mine = [e for e in reversed(self._entries) if e.key_id == key_id]
        return mine[:limit]

    def flush(self) -> None:
        """Nothing to persist."""

    @staticmethod
    def now() -> float:
        return time.time()


_COLUMNS = tuple(f.name for f in fields(JournalEntry))
_INSERT = (f"INSERT INTO request_journal ({', '.join(_COLUMNS)})"  # noqa: S608 - column list and lock suffix are constants; values are bound
           f" VALUES ({', '.join('?' * len(_COLUMNS))})")
_SELECT = (f"SELECT {', '.join(_COLUMNS)} FROM request_journal"  # noqa: S608 - column list and lock suffix are constants; values are bound
           " WHERE key_id = ? ORDER BY id DESC LIMIT ?")


#: an entry's column values in ``_COLUMNS`` order (``dataclasses.astuple`` deep-copies)
_row = operator.attrgetter(*_COLUMNS)


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["stream"], data["interrupted"] = bool(data["stream"]), bool(data["interrupted"])
    return JournalEntry(**data)


class SQLJournal:
    """Journal rows in the shared database, appended in batches."""

    def __init__(self, db: Database, *, retention_seconds: float = 7 * 86400,
                 max_pending: int = 100_000) -> None:
        self.db = db
        #: reads may wait on the network (the gateway calls them off its event loop)
        self.blocking = db.blocking
        self._retention = retention_seconds
        self._pending: deque[JournalEntry] = deque(maxlen=max_pending)
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def record(self, entry: JournalEntry) -> None:
        """Queue one entry (written at the next :meth:`flush`)."""
        with self._lock:
            self._pending.append(entry)

    def recent(self, key_id: str, limit: int = 50) -> list[JournalEntry]:
        """Newest first, only ``key_id``'s entries, across every replica."""
        with self._lock:
            mine = [e for e in reversed(self._pending) if e.key_id == key_id][:limit]
        rows = self.db.query(_SELECT, (key_id, limit))
        return (mine + [_entry(r) for r in rows])[:limit]

    def flush(self) -> None:
        """Write queued entries in one transaction; prune old rows now and then."""
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        now = time.time()
        try:
            with self.db.transaction() as tx:
                tx.executemany(_INSERT, [_row(e) for e in batch])
                if now >= self._next_prune:
                    tx.execute("DELETE FROM request_journal WHERE at < ?", (now - self._retention,))
        except BaseException:
            with self._lock:
                self._pending.extendleft(reversed(batch))
            raise
        if now >= self._next_prune:
            self._next_prune = now + 60.0
