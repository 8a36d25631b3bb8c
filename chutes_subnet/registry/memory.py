"""In-process instance registry (validator and gateway in one process)."""

from __future__ import annotations

import threading
import time

from chutes_subnet.registry.instances import InstanceRecord, admit, models_of

__all__ = ["MemoryInstanceRegistry"]


class MemoryInstanceRegistry:
    """:class:`~chutes_subnet.registry.InstanceRegistry` in a dict behind a lock."""

    def __init__(self) -> None:
        self._records: dict[str, InstanceRecord] = {}
        self._lock = threading.Lock()

    def upsert(self, rec: InstanceRecord) -> None:
        """Create or refresh ``rec`` for its hotkey (raises on a conflict)."""
        with self._lock:
            admit(self._records.get(rec.instance_id), rec)
            self._records[rec.instance_id] = rec

    def remove(self, hotkey: str, instance_id: str) -> bool:
        """Remove the record if ``hotkey`` holds it."""
        with self._lock:
            held = self._records.get(instance_id)
            if held is None or held.hotkey != hotkey:
                return False
            del self._records[instance_id]
            return True

    def get(self, instance_id: str) -> InstanceRecord | None:
        """The record with this id, live or expired."""
        with self._lock:
            return self._records.get(instance_id)

    def list_verified(
        self, chute_id: str | None = None, now: float | None = None
    ) -> list[InstanceRecord]:
        """Live records, optionally of one chute."""
        t = time.time() if now is None else now
        with self._lock:
            recs = list(self._records.values())
        return [r for r in recs if r.is_live(t) and (chute_id is None or r.chute_id == chute_id)]

    def models(self, now: float | None = None) -> list[tuple[str, str]]:
        """Distinct ``(model, chute_id)`` pairs served by a live instance."""
        return models_of(self.list_verified(now=now))

    def knows_chute(self, chute_id: str) -> bool:
        """True if any record, live or expired, serves ``chute_id``."""
        with self._lock:
            return any(r.chute_id == chute_id for r in self._records.values())

    def prune(self, expired_before: float) -> int:
        """Drop records that expired before ``expired_before``."""
        with self._lock:
            stale = [k for k, r in self._records.items() if r.expires_at < expired_before]
            for k in stale:
                del self._records[k]
            return len(stale)
