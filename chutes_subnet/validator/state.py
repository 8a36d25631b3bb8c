"""The validator's durable state: scores, last results, evidence summaries, rounds.

One SQLite file (WAL, ``synchronous=FULL``). A round is committed in ONE transaction
(:meth:`ValidatorState.commit_round`), so a validator killed at any instant - even
with SIGKILL in the middle of a round or of the commit - restarts with the scores of
the last committed round and never with a mix of two rounds.

Tables: ``scores`` (uid -> hotkey, coldkey, EMA, planned weight), ``results`` (last
result per uid as JSON, incl. the attestation summary; a fleet's per-instance results
under ``instances``), ``rounds`` (one row per
round: block, timing, seed, weights outcome), ``meta`` (schema version, counters).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chutes_subnet.errors import ChutesSubnetError

from .results import RoundReport
from .scoring import ScoreEntry

__all__ = ["ValidatorStateError", "StateSnapshot", "ValidatorState", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scores (
    uid INTEGER PRIMARY KEY, hotkey TEXT NOT NULL, coldkey TEXT NOT NULL,
    ema REAL NOT NULL, weight REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS results (
    uid INTEGER PRIMARY KEY, round_index INTEGER NOT NULL, hotkey TEXT NOT NULL,
    result TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round_index INTEGER PRIMARY KEY, block INTEGER NOT NULL, started_at REAL NOT NULL,
    duration_s REAL NOT NULL, seed TEXT NOT NULL, miners INTEGER NOT NULL,
    weights TEXT NOT NULL, weights_ok INTEGER, weights_message TEXT);
"""


class ValidatorStateError(ChutesSubnetError):
    """The state file cannot be opened, is corrupt, or has an unknown schema."""


@dataclass(frozen=True)
class StateSnapshot:
    """Everything committed by the last round."""

    round_index: int
    last_block: int | None
    scores: dict[int, ScoreEntry]
    weights: dict[int, float]
    results: dict[int, dict[str, Any]]
    last_weights_block: int | None


def _results_by_uid(report: RoundReport) -> dict[int, dict[str, Any]]:
    """One stored result per uid: its representative, with every instance's result
    under ``"instances"`` when it fronts a fleet."""
    out: dict[int, dict[str, Any]] = {}
    for uid in dict.fromkeys(r.uid for r in report.results):
        group = report.results_for(uid)
        rep = report.result_for(uid)
        if rep is None:  # pragma: no cover - uid comes from the results
            continue
        data = rep.to_dict()
        if len(group) > 1:
            data["instances"] = [r.to_dict() for r in group]
        out[uid] = data
    return out


class ValidatorState:
    """Durable validator state in ``path`` (``":memory:"`` for tests)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                         check_same_thread=False)
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            if self._conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise ValidatorStateError("validator state file failed its integrity check")
            self._conn.executescript(_SCHEMA)
            version = self._meta("schema_version")
            if version is None:
                self._conn.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                                   (str(SCHEMA_VERSION),))
            elif int(version) != SCHEMA_VERSION:
                raise ValidatorStateError(f"unsupported validator state schema {version}")
        except sqlite3.Error as exc:
            raise ValidatorStateError(f"cannot open validator state {self.path}") from exc

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def load(self) -> StateSnapshot:
        """The last committed state (empty on a fresh file)."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT uid, hotkey, coldkey, ema, weight FROM scores ORDER BY uid").fetchall()
                res = self._conn.execute("SELECT uid, result FROM results ORDER BY uid").fetchall()
                round_index = int(self._meta("round_index") or 0)
                last_block = self._meta("last_block")
                weights_block = self._meta("last_weights_block")
            except sqlite3.Error as exc:
                raise ValidatorStateError("cannot read validator state") from exc
        return StateSnapshot(
            round_index=round_index,
            last_block=int(last_block) if last_block is not None else None,
            scores={int(u): ScoreEntry(h, c, float(e)) for u, h, c, e, _ in rows},
            weights={int(u): float(w) for u, _, _, _, w in rows if w > 0},
            results={int(u): json.loads(r) for u, r in res},
            last_weights_block=int(weights_block) if weights_block is not None else None,
        )

    def commit_round(self, report: RoundReport, scores: dict[int, ScoreEntry],
                     seed: bytes) -> None:
        """Atomically replace scores/weights, upsert results and record the round."""
        weights = report.weights
        wr = report.weights_result
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("DELETE FROM scores")
                conn.executemany(
                    "INSERT INTO scores VALUES (?, ?, ?, ?, ?)",
                    [(uid, e.hotkey, e.coldkey, e.ema, weights.get(uid, 0.0))
                     for uid, e in sorted(scores.items())])
                conn.execute("DELETE FROM results WHERE uid NOT IN (SELECT uid FROM scores)"
                             " AND round_index < ?", (report.round_index,))
                conn.executemany(
                    "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                    [(uid, report.round_index, result["hotkey"],
                      json.dumps(result, separators=(",", ":"), sort_keys=True))
                     for uid, result in _results_by_uid(report).items()])
                conn.execute(
                    "INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (report.round_index, report.block, report.started_at, report.duration_s,
                     seed.hex(), len({r.uid for r in report.results}),
                     json.dumps({str(k): v for k, v in sorted(weights.items())}),
                     None if wr is None else int(wr.success),
                     None if wr is None else wr.message[:500]))
                meta = {"round_index": report.round_index, "last_block": report.block}
                if wr is not None and wr.success:
                    meta["last_weights_block"] = wr.block if wr.block is not None else report.block
                conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [(k, str(v)) for k, v in meta.items()])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def rounds(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent rounds, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT round_index, block, started_at, duration_s, miners, weights_ok,"
                " weights_message FROM rounds ORDER BY round_index DESC LIMIT ?",
                (int(limit),)).fetchall()
        keys = ("round_index", "block", "started_at", "duration_s", "miners", "weights_ok",
                "weights_message")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._conn.close()
