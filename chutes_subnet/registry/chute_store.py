"""The chute registry on the shared SQL seam (SQLite embedded, PostgreSQL for fleets).

Two tables (migration 5 of :mod:`chutes_subnet.stores.migrations`):

* ``chutes`` — the current version of each chute (spec JSON, owner, version, retired);
* ``chute_versions`` — the audit log: one row per change (deploy, update, retire) with
  the actor and the full spec, never updated or deleted.

Rules, checked inside one transaction: only the owner updates, retires or re-deploys
a chute (:class:`~chutes_subnet.registry.chutes.ChuteForbidden`); deploying the spec
that is already current changes nothing (idempotent, no new version); a retired chute
is re-deployed by its owner as a new version. Reads are served from a snapshot
refreshed at most every ``cache_seconds``, so the gateway's hot path (discovery,
invoke) costs no query per request; writes through this object refresh it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from chutes_subnet.registry.chutes import (
    Chute,
    ChuteChange,
    ChuteForbidden,
    ChuteNotFound,
    ChuteSpec,
    spec_from_stored,
)

if TYPE_CHECKING:
    from chutes_subnet.attestation.verify.manifest import WorkloadManifest
    from chutes_subnet.stores.database import Database, Transaction

__all__ = ["SQLChuteStore"]

_COLUMNS = "chute_id, owner, version, retired, spec, created_at, updated_at"


def _row_to_chute(row: Sequence[Any]) -> Chute:
    _cid, owner, version, retired, spec, created, updated = row
    return Chute(spec_from_stored(json.loads(spec)), owner, int(version), bool(retired),
                 float(created), float(updated))


class SQLChuteStore:
    """:class:`~chutes_subnet.registry.chutes.ChuteStore` on a :class:`Database`."""

    def __init__(self, db: Database, *, cache_seconds: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: dict[str, Chute] | None = None
        self._snapshot_at = 0.0

    @property
    def blocking(self) -> bool:
        """True when calls may wait on the network (PostgreSQL): keep them off the loop."""
        return bool(getattr(self._db, "blocking", False))

    # --- writes -----------------------------------------------------------------------

    def deploy(self, spec: ChuteSpec, actor: str) -> Chute:
        """Create, update or re-deploy ``spec``; only its owner may change it."""
        now = self._clock()
        body = spec.canonical_json()
        with self._db.transaction() as tx:
            current = self._current(tx, spec.chute_id)
            if current is None:
                chute = Chute(spec, actor, 1, False, now, now)
                tx.execute(f"INSERT INTO chutes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - column list and lock suffix are constants; values are bound
                           (spec.chute_id, actor, 1, False, body, now, now))
                self._log(tx, chute, "deploy", actor, now)
            else:
                if current.owner != actor:
                    raise ChuteForbidden(f"chute {spec.name} is owned by another key")
                if not current.retired and current.spec.canonical_json() == body:
                    return current
                action = "deploy" if current.retired else "update"
                chute = Chute(spec, actor, current.version + 1, False, current.created_at, now)
                tx.execute("UPDATE chutes SET version = ?, retired = ?, spec = ?, updated_at = ?"
                           " WHERE chute_id = ?",
                           (chute.version, False, body, now, spec.chute_id))
                self._log(tx, chute, action, actor, now)
        self._invalidate()
        return chute

    def retire(self, chute_id: str, actor: str) -> Chute:
        """Retire a chute (owner only); retiring a retired chute changes nothing."""
        now = self._clock()
        with self._db.transaction() as tx:
            current = self._current(tx, chute_id)
            if current is None:
                raise ChuteNotFound("no such chute")
            if current.owner != actor:
                raise ChuteForbidden(f"chute {current.name} is owned by another key")
            if current.retired:
                return current
            chute = Chute(current.spec, actor, current.version + 1, True, current.created_at,
                          now)
            tx.execute("UPDATE chutes SET version = ?, retired = ?, updated_at = ?"
                       " WHERE chute_id = ?", (chute.version, True, now, chute_id))
            self._log(tx, chute, "retire", actor, now)
        self._invalidate()
        return chute

    # --- reads ------------------------------------------------------------------------

    def get(self, chute_id: str) -> Chute | None:
        """The current version, retired or not."""
        return self._all().get(chute_id)

    def all(self) -> list[Chute]:
        """Every chute, by name."""
        return sorted(self._all().values(), key=lambda c: c.name)

    def history(self, chute_id: str) -> list[ChuteChange]:
        """Every change of ``chute_id``, oldest first."""
        rows = self._db.query(
            "SELECT chute_id, version, action, actor, at, spec FROM chute_versions"
            " WHERE chute_id = ? ORDER BY version", (chute_id,))
        return [ChuteChange(r[0], int(r[1]), r[2], r[3], float(r[4]), json.loads(r[5]))
                for r in rows]

    def published_manifests(self, chute_id: str) -> tuple[WorkloadManifest, ...]:
        """The attestation verifier's ``ManifestSource``: the live chute's manifest."""
        chute = self.get(chute_id)
        if chute is None or chute.retired:
            return ()
        return (chute.spec.workload_manifest(),)

    # --- internals ----------------------------------------------------------------------

    def _all(self) -> dict[str, Chute]:
        mono = time.monotonic()
        with self._lock:
            if self._snapshot is not None and mono - self._snapshot_at < self._cache_seconds:
                return self._snapshot
        rows = self._db.query(f"SELECT {_COLUMNS} FROM chutes")  # noqa: S608 - column list and lock suffix are constants; values are bound
        snapshot = {r[0]: _row_to_chute(r) for r in rows}
        with self._lock:
            self._snapshot, self._snapshot_at = snapshot, mono
        return snapshot

    def _invalidate(self) -> None:
        with self._lock:
            self._snapshot = None

    @staticmethod
    def _current(tx: Transaction, chute_id: str) -> Chute | None:
        rows = tx.execute(f"SELECT {_COLUMNS} FROM chutes WHERE chute_id = ?", (chute_id,))  # noqa: S608 - column list and lock suffix are constants; values are bound
        return _row_to_chute(rows[0]) if rows else None

    @staticmethod
    def _log(tx: Transaction, chute: Chute, action: str, actor: str, at: float) -> None:
        tx.execute("INSERT INTO chute_versions (chute_id, version, action, actor, at, spec)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   (chute.chute_id, chute.version, action, actor, at,
                    json.dumps(chute.to_dict(), sort_keys=True)))
