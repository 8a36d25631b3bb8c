"""Registry of attested miner instances, written by the validator, read by the gateway.

The validator calls :meth:`InstanceRegistry.upsert` after an instance's attestation
verified (setting ``verified_at`` and ``expires_at``); the gateway only ever routes to
records returned by :meth:`InstanceRegistry.list_verified`, i.e. those not yet expired.
An instance whose attestation lapses therefore drops out of discovery and routing
without any explicit removal.

Two implementations:

* :class:`MemoryInstanceRegistry` — validator and gateway in one process.
* :class:`SQLiteInstanceRegistry` — one file shared between a validator process and
  one or more gateway processes (WAL mode, so readers never block the writer).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "InstanceRecord",
    "InstanceRegistry",
    "MemoryInstanceRegistry",
    "SQLiteInstanceRegistry",
]


@dataclass(frozen=True)
class InstanceRecord:
    """One attested miner instance serving one chute."""

    instance_id: str
    chute_id: str
    model: str
    url: str  #: "http://ip:port" of the miner
    hotkey: str
    uid: int
    e2e_pubkey: str  #: base64 ML-KEM-768 public key bound into the attestation
    e2e_versions: tuple[int, ...] = (1, 2)
    verified_at: float = 0.0
    expires_at: float = 0.0
    score: float = 0.0
    simulated: bool = False

    def is_live(self, now: float) -> bool:
        """True while the attestation verdict is still fresh."""
        return now < self.expires_at


@runtime_checkable
class InstanceRegistry(Protocol):
    """Storage of attested instances (validator writes, gateway reads)."""

    def upsert(self, rec: InstanceRecord) -> None: ...

    def remove(self, instance_id: str) -> None: ...

    def list_verified(
        self, chute_id: str | None = None, now: float | None = None
    ) -> list[InstanceRecord]: ...

    def models(self, now: float | None = None) -> list[tuple[str, str]]: ...

    def knows_chute(self, chute_id: str) -> bool: ...


def _models_of(records: list[InstanceRecord]) -> list[tuple[str, str]]:
    return sorted({(r.model, r.chute_id) for r in records})


class MemoryInstanceRegistry:
    """In-process registry (a dict behind a lock)."""

    def __init__(self) -> None:
        self._records: dict[str, InstanceRecord] = {}
        self._lock = threading.Lock()

    def upsert(self, rec: InstanceRecord) -> None:
        """Insert or replace the record with ``rec.instance_id``."""
        with self._lock:
            self._records[rec.instance_id] = rec

    def remove(self, instance_id: str) -> None:
        """Forget an instance (no error if unknown)."""
        with self._lock:
            self._records.pop(instance_id, None)

    def list_verified(
        self, chute_id: str | None = None, now: float | None = None
    ) -> list[InstanceRecord]:
        """Records whose attestation has not expired, optionally for one chute."""
        t = time.time() if now is None else now
        with self._lock:
            recs = list(self._records.values())
        return [
            r for r in recs if r.is_live(t) and (chute_id is None or r.chute_id == chute_id)
        ]

    def models(self, now: float | None = None) -> list[tuple[str, str]]:
        """Distinct ``(model, chute_id)`` pairs served by at least one live instance."""
        return _models_of(self.list_verified(now=now))

    def knows_chute(self, chute_id: str) -> bool:
        """True if any record, live or expired, serves ``chute_id``."""
        with self._lock:
            return any(r.chute_id == chute_id for r in self._records.values())


_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    chute_id    TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_chute ON instances (chute_id, expires_at);
"""


def _encode(rec: InstanceRecord) -> str:
    return json.dumps(asdict(rec), separators=(",", ":"))


def _decode(text: str) -> InstanceRecord:
    data = json.loads(text)
    data["e2e_versions"] = tuple(int(v) for v in data.get("e2e_versions", (1, 2)))
    return InstanceRecord(**data)


class SQLiteInstanceRegistry:
    """Registry in a SQLite file (WAL), safe to share between processes.

    Reads are cached for ``cache_seconds`` (default 1 s) so the gateway's hot path does
    not hit the file on every request; a validator's update becomes visible to other
    processes within that window. Writes through this object invalidate its own cache.
    """

    def __init__(self, path: str | Path, *, cache_seconds: float = 1.0) -> None:
        self._path = str(path)
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self._path, check_same_thread=False, timeout=5.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._conn.commit()
        self._cache: list[InstanceRecord] | None = None
        self._cache_at = 0.0

    def upsert(self, rec: InstanceRecord) -> None:
        """Insert or replace the record with ``rec.instance_id``."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO instances (instance_id, chute_id, expires_at, record)"
                " VALUES (?, ?, ?, ?)",
                (rec.instance_id, rec.chute_id, rec.expires_at, _encode(rec)),
            )
            self._conn.commit()
            self._cache = None

    def remove(self, instance_id: str) -> None:
        """Forget an instance (no error if unknown)."""
        with self._lock:
            self._conn.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,))
            self._conn.commit()
            self._cache = None

    def _all(self) -> list[InstanceRecord]:
        mono = time.monotonic()
        with self._lock:
            if self._cache is not None and mono - self._cache_at < self._cache_seconds:
                return self._cache
            rows = self._conn.execute("SELECT record FROM instances").fetchall()
            self._cache = [_decode(row[0]) for row in rows]
            self._cache_at = mono
            return self._cache

    def list_verified(
        self, chute_id: str | None = None, now: float | None = None
    ) -> list[InstanceRecord]:
        """Records whose attestation has not expired, optionally for one chute."""
        t = time.time() if now is None else now
        return [
            r for r in self._all()
            if r.is_live(t) and (chute_id is None or r.chute_id == chute_id)
        ]

    def models(self, now: float | None = None) -> list[tuple[str, str]]:
        """Distinct ``(model, chute_id)`` pairs served by at least one live instance."""
        return _models_of(self.list_verified(now=now))

    def knows_chute(self, chute_id: str) -> bool:
        """True if any record, live or expired, serves ``chute_id``."""
        return any(r.chute_id == chute_id for r in self._all())

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()
