"""Instance registry in the shared SQL database (SQLite file or PostgreSQL server).

Records live in the ``instance_records`` table (migration 3 of
:mod:`chutes_subnet.stores.migrations`), keyed by ``instance_id`` with the holding
``hotkey`` beside it. A write checks ownership inside its transaction: it reads the
current holder (``FOR UPDATE`` on PostgreSQL), applies
:func:`~chutes_subnet.registry.instances.admit`, then writes with an ``ON CONFLICT``
guard that only replaces a row of the same hotkey — so two validators racing to
register one key for two hotkeys cannot both win, on either engine. Rows read back
are checked again (:func:`~chutes_subnet.registry.instances.check_record`): a row
whose id is not derived from its key is never routed to.

Gateways read through a cache (``cache_seconds``); :meth:`SQLInstanceRegistry.refresh`
re-reads it, and the gateway calls it off its event loop once a second, so on
PostgreSQL the request path does not wait on the network.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from chutes_subnet.registry.instances import (
    InstanceRecord,
    InvalidInstanceRecord,
    admit,
    check_record,
    models_of,
)

if TYPE_CHECKING:
    from chutes_subnet.stores.database import Database

__all__ = ["SQLInstanceRegistry"]

log = logging.getLogger("chutes_subnet.registry")

_UPSERT = (
    "INSERT INTO instance_records (instance_id, hotkey, chute_id, expires_at, record)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (instance_id) DO UPDATE SET"
    " chute_id = excluded.chute_id, expires_at = excluded.expires_at,"
    " record = excluded.record WHERE instance_records.hotkey = excluded.hotkey"
    " RETURNING instance_id"
)


def _encode(rec: InstanceRecord) -> str:
    return json.dumps(asdict(rec), separators=(",", ":"))


def _decode(text: str) -> InstanceRecord:
    data = json.loads(text)
    data["e2e_versions"] = tuple(int(v) for v in data.get("e2e_versions", (1, 2)))
    data["statements"] = tuple(str(s) for s in data.get("statements", ()))
    return InstanceRecord(**data)


def _checked(text: str) -> InstanceRecord | None:
    """A stored row as a record, or None (logged) when it fails the record checks."""
    try:
        rec = _decode(text)
        check_record(rec)
    except (InvalidInstanceRecord, ValueError, TypeError, KeyError) as exc:
        log.warning("registry: ignoring a stored record (%s)", exc)
        return None
    return rec


class SQLInstanceRegistry:
    """:class:`~chutes_subnet.registry.InstanceRegistry` on a :class:`Database`."""

    def __init__(self, db: Database, *, cache_seconds: float = 1.0,
                 owns_db: bool = False) -> None:
        self.db = db
        #: reads may wait on the network (the gateway refreshes off its event loop)
        self.blocking = db.blocking
        self._owns_db = owns_db
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cache: list[InstanceRecord] | None = None
        self._cache_at = 0.0
        self._lock_row = " FOR UPDATE" if db.engine == "postgresql" else ""

    def upsert(self, rec: InstanceRecord) -> None:
        """Create or refresh ``rec`` for its hotkey (raises on a conflict)."""
        check_record(rec)
        with self.db.transaction() as tx:
            rows = tx.execute("SELECT record FROM instance_records WHERE instance_id = ?"  # noqa: S608 - column list and lock suffix are constants; values are bound
                              + self._lock_row, (rec.instance_id,))
            admit(_decode(rows[0][0]) if rows else None, rec)
            written = tx.execute(_UPSERT, (rec.instance_id, rec.hotkey, rec.chute_id,
                                           rec.expires_at, _encode(rec)))
            if not written:  # another hotkey inserted it after our read: re-check, raise
                held = tx.execute("SELECT record FROM instance_records WHERE instance_id = ?",
                                  (rec.instance_id,))
                admit(_decode(held[0][0]) if held else None, rec)
        self._invalidate()

    def remove(self, hotkey: str, instance_id: str) -> bool:
        """Remove the record if ``hotkey`` holds it."""
        with self.db.transaction() as tx:
            gone = tx.execute("DELETE FROM instance_records WHERE instance_id = ? AND hotkey = ?"
                              " RETURNING instance_id", (instance_id, hotkey))
        self._invalidate()
        return bool(gone)

    def get(self, instance_id: str) -> InstanceRecord | None:
        """The record with this id, live or expired (a row failing the checks: None).

        From the read cache while it is fresh, else one row by key: re-reading every
        record here would make a validator publishing n instances (each write drops
        the cache, each publish reads its record first) read n² rows a round.
        """
        with self._lock:
            cache, at = self._cache, self._cache_at
        if cache is not None and time.monotonic() - at < self._cache_seconds:
            return next((r for r in cache if r.instance_id == instance_id), None)
        rows = self.db.query("SELECT record FROM instance_records WHERE instance_id = ?",
                             (instance_id,))
        return _checked(rows[0][0]) if rows else None

    def prune(self, expired_before: float) -> int:
        """Drop records that expired before ``expired_before``."""
        with self.db.transaction() as tx:
            gone = tx.execute("DELETE FROM instance_records WHERE expires_at < ?"
                              " RETURNING instance_id", (expired_before,))
        self._invalidate()
        return len(gone)

    def refresh(self) -> None:
        """Re-read every record now (the gateway calls this off its event loop)."""
        rows = self.db.query("SELECT record FROM instance_records")
        records = [rec for (text,) in rows if (rec := _checked(text)) is not None]
        with self._lock:
            self._cache, self._cache_at = records, time.monotonic()

    def flush(self) -> None:
        """The gateway's periodic hook: keep the read cache fresh."""
        self.refresh()

    def _invalidate(self) -> None:
        with self._lock:
            self._cache = None

    def _all(self) -> list[InstanceRecord]:
        with self._lock:
            cache, at = self._cache, self._cache_at
        if cache is None or time.monotonic() - at >= self._cache_seconds:
            self.refresh()
            with self._lock:
                cache = self._cache
        return cache or []

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
        """Close the database if this registry opened it."""
        if self._owns_db:
            self.db.close()
