"""Instance registry in a SQLite file (WAL), shared by a validator and gateways.

Records live in the ``instance_records`` table, keyed by ``instance_id`` with the
holding ``hotkey`` beside it; a write checks ownership in the same ``BEGIN IMMEDIATE``
transaction, so two writers cannot both claim one key. Rows read back are checked
again (:func:`~chutes_subnet.registry.instances.check_record`): a row whose id is not
derived from its key — written by hand or by an older version — is never routed to.
(The pre-B1 ``instances`` table of older files is left untouched and unused.)
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path

from chutes_subnet.registry.instances import (
    InstanceRecord,
    InvalidInstanceRecord,
    admit,
    check_record,
    models_of,
)

__all__ = ["SQLiteInstanceRegistry"]

log = logging.getLogger("chutes_subnet.registry")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instance_records (
    instance_id TEXT PRIMARY KEY,
    hotkey      TEXT NOT NULL,
    chute_id    TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instance_records_chute ON instance_records (chute_id, expires_at);
"""


def _encode(rec: InstanceRecord) -> str:
    return json.dumps(asdict(rec), separators=(",", ":"))


def _decode(text: str) -> InstanceRecord:
    data = json.loads(text)
    data["e2e_versions"] = tuple(int(v) for v in data.get("e2e_versions", (1, 2)))
    return InstanceRecord(**data)


class SQLiteInstanceRegistry:
    """:class:`~chutes_subnet.registry.InstanceRegistry` in a SQLite file.

    Reads are cached for ``cache_seconds`` (default 1 s) so the gateway's hot path does
    not hit the file on every request; a validator's update becomes visible to other
    processes within that window. Writes through this object invalidate its own cache.
    """

    def __init__(self, path: str | Path, *, cache_seconds: float = 1.0) -> None:
        self._path = str(path)
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self._path, check_same_thread=False, timeout=5.0,
                                     isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._cache: list[InstanceRecord] | None = None
        self._cache_at = 0.0

    def _get_locked(self, instance_id: str) -> InstanceRecord | None:
        row = self._conn.execute("SELECT record FROM instance_records WHERE instance_id = ?",
                                 (instance_id,)).fetchone()
        return _decode(row[0]) if row else None

    def upsert(self, rec: InstanceRecord) -> None:
        """Create or refresh ``rec`` for its hotkey (raises on a conflict)."""
        check_record(rec)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                admit(self._get_locked(rec.instance_id), rec)
                self._conn.execute(
                    "INSERT OR REPLACE INTO instance_records"
                    " (instance_id, hotkey, chute_id, expires_at, record) VALUES (?, ?, ?, ?, ?)",
                    (rec.instance_id, rec.hotkey, rec.chute_id, rec.expires_at, _encode(rec)))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            self._cache = None

    def remove(self, hotkey: str, instance_id: str) -> bool:
        """Remove the record if ``hotkey`` holds it."""
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM instance_records WHERE instance_id = ? AND hotkey = ?",
                (instance_id, hotkey))
            self._cache = None
            return cur.rowcount > 0

    def get(self, instance_id: str) -> InstanceRecord | None:
        """The record with this id, live or expired (a row failing the checks: None)."""
        return next((r for r in self._all() if r.instance_id == instance_id), None)

    def prune(self, expired_before: float) -> int:
        """Drop records that expired before ``expired_before``."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM instance_records WHERE expires_at < ?",
                                     (expired_before,))
            self._cache = None
            return cur.rowcount

    def _all(self) -> list[InstanceRecord]:
        mono = time.monotonic()
        with self._lock:
            if self._cache is not None and mono - self._cache_at < self._cache_seconds:
                return self._cache
            rows = self._conn.execute("SELECT record FROM instance_records").fetchall()
            records = []
            for (text,) in rows:
                try:
                    rec = _decode(text)
                    check_record(rec)
                except (InvalidInstanceRecord, ValueError, TypeError, KeyError) as exc:
                    log.warning("registry: ignoring a stored record (%s)", exc)
                    continue
                records.append(rec)
            self._cache, self._cache_at = records, mono
            return records

    def list_verified(
        self, chute_id: str | None = None, now: float | None = None
    ) -> list[InstanceRecord]:
        """Live records, optionally of one chute."""
        t = time.time() if now is None else now
        return [r for r in self._all()
                if r.is_live(t) and (chute_id is None or r.chute_id == chute_id)]

    def models(self, now: float | None = None) -> list[tuple[str, str]]:
        """Distinct ``(model, chute_id)`` pairs served by a live instance."""
        return models_of(self.list_verified(now=now))

    def knows_chute(self, chute_id: str) -> bool:
        """True if any record, live or expired, serves ``chute_id``."""
        return any(r.chute_id == chute_id for r in self._all())

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()
