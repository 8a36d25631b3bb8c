"""Versioned schema migrations for the gateway's shared state (SQLite and PostgreSQL).

Each :class:`Migration` has a version (1, 2, …, never reused or edited once released)
and the statements for each engine. :func:`migrate` applies, in one transaction, every
migration newer than the database's ``schema_migrations`` table says it has, and
records each one. On PostgreSQL the transaction first takes an advisory lock, so
replicas starting together migrate once; on SQLite ``BEGIN IMMEDIATE`` does the same.
A database whose schema is newer than this code is refused
(:class:`~chutes_subnet.errors.SchemaVersionError`): an old replica must not write
rows it does not understand.

Version 1 is the schema the SQLite stores created before migrations existed (``IF NOT
EXISTS``), so existing files upgrade in place.

To change the schema: append a migration; never edit a released one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chutes_subnet.errors import SchemaVersionError

if TYPE_CHECKING:
    from chutes_subnet.stores.database import Database

__all__ = ["MIGRATIONS", "Migration", "migrate", "schema_version"]

#: pg_advisory_xact_lock key: "chutes-s" as a signed 64-bit integer
_LOCK_KEY = int.from_bytes(b"chutes-s", "big", signed=True)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "api keys and daily usage",
        sqlite=(
            """CREATE TABLE IF NOT EXISTS api_keys (
                key_hash BLOB PRIMARY KEY, key_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                quota_tokens INTEGER, rate REAL, burst INTEGER, created_at REAL NOT NULL,
                revoked INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE IF NOT EXISTS usage (
                key_id TEXT NOT NULL, day TEXT NOT NULL,
                requests INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,
                completion_tokens INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (key_id, day))""",
        ),
        postgresql=(
            """CREATE TABLE api_keys (
                key_hash BYTEA PRIMARY KEY, key_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                quota_tokens BIGINT, rate DOUBLE PRECISION, burst INTEGER,
                created_at DOUBLE PRECISION NOT NULL, revoked BOOLEAN NOT NULL DEFAULT FALSE)""",
            """CREATE TABLE usage (
                key_id TEXT NOT NULL, day TEXT NOT NULL,
                requests BIGINT NOT NULL DEFAULT 0, prompt_tokens BIGINT NOT NULL DEFAULT 0,
                completion_tokens BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (key_id, day))""",
        ),
    ),
    Migration(
        2, "request journal",
        sqlite=(
            """CREATE TABLE IF NOT EXISTS request_journal (
                id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, key_id TEXT NOT NULL,
                chute_id TEXT NOT NULL, instance_id TEXT NOT NULL, nonce_prefix TEXT NOT NULL,
                e2e_version INTEGER NOT NULL, stream INTEGER NOT NULL,
                request_bytes INTEGER NOT NULL, response_bytes INTEGER NOT NULL,
                prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
                status INTEGER NOT NULL, duration_ms REAL NOT NULL,
                interrupted INTEGER NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS request_journal_key ON request_journal (key_id, id)",
            "CREATE INDEX IF NOT EXISTS request_journal_at ON request_journal (at)",
        ),
        postgresql=(
            """CREATE TABLE request_journal (
                id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, key_id TEXT NOT NULL,
                chute_id TEXT NOT NULL, instance_id TEXT NOT NULL, nonce_prefix TEXT NOT NULL,
                e2e_version SMALLINT NOT NULL, stream BOOLEAN NOT NULL,
                request_bytes BIGINT NOT NULL, response_bytes BIGINT NOT NULL,
                prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
                status SMALLINT NOT NULL, duration_ms DOUBLE PRECISION NOT NULL,
                interrupted BOOLEAN NOT NULL)""",
            "CREATE INDEX request_journal_key ON request_journal (key_id, id)",
            "CREATE INDEX request_journal_at ON request_journal (at)",
        ),
    ),
    Migration(
        3, "billing ledger: balances, journal, plans, deposits, burn audit",
        sqlite=(
            """CREATE TABLE accounts (
                key_id TEXT PRIMARY KEY, balance_rao BIGINT NOT NULL DEFAULT 0)""",
            """CREATE TABLE entries (
                id INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL, kind TEXT NOT NULL,
                amount_rao BIGINT NOT NULL, ref TEXT NOT NULL UNIQUE, model TEXT,
                prompt_tokens BIGINT NOT NULL DEFAULT 0,
                completion_tokens BIGINT NOT NULL DEFAULT 0,
                plan_tokens BIGINT NOT NULL DEFAULT 0, block_number BIGINT,
                created_at REAL NOT NULL)""",
            "CREATE INDEX entries_key ON entries (key_id, id)",
            "CREATE INDEX entries_block ON entries (block_number)",
            """CREATE TABLE subscriptions (
                key_id TEXT PRIMARY KEY, plan_id TEXT NOT NULL, period TEXT NOT NULL,
                quota BIGINT NOT NULL, expires_at REAL NOT NULL,
                period_key TEXT NOT NULL, used_tokens BIGINT NOT NULL)""",
            """CREATE TABLE deposit_addresses (
                address TEXT PRIMARY KEY, key_id TEXT NOT NULL UNIQUE)""",
            """CREATE TABLE chain_blocks (
                watcher TEXT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
                PRIMARY KEY (watcher, block_number))""",
            """CREATE TABLE burn_audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, outcome TEXT NOT NULL,
                collected_rao BIGINT NOT NULL, amount_rao BIGINT NOT NULL, block_number BIGINT,
                extrinsic TEXT, message TEXT NOT NULL)""",
        ),
        postgresql=(
            """CREATE TABLE accounts (
                key_id TEXT PRIMARY KEY, balance_rao BIGINT NOT NULL DEFAULT 0)""",
            """CREATE TABLE entries (
                id BIGSERIAL PRIMARY KEY, key_id TEXT NOT NULL, kind TEXT NOT NULL,
                amount_rao BIGINT NOT NULL, ref TEXT NOT NULL UNIQUE, model TEXT,
                prompt_tokens BIGINT NOT NULL DEFAULT 0,
                completion_tokens BIGINT NOT NULL DEFAULT 0,
                plan_tokens BIGINT NOT NULL DEFAULT 0, block_number BIGINT,
                created_at DOUBLE PRECISION NOT NULL)""",
            "CREATE INDEX entries_key ON entries (key_id, id)",
            "CREATE INDEX entries_block ON entries (block_number)",
            """CREATE TABLE subscriptions (
                key_id TEXT PRIMARY KEY, plan_id TEXT NOT NULL, period TEXT NOT NULL,
                quota BIGINT NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
                period_key TEXT NOT NULL, used_tokens BIGINT NOT NULL)""",
            """CREATE TABLE deposit_addresses (
                address TEXT PRIMARY KEY, key_id TEXT NOT NULL UNIQUE)""",
            """CREATE TABLE chain_blocks (
                watcher TEXT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
                PRIMARY KEY (watcher, block_number))""",
            """CREATE TABLE burn_audit (
                id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL,
                collected_rao BIGINT NOT NULL, amount_rao BIGINT NOT NULL, block_number BIGINT,
                extrinsic TEXT, message TEXT NOT NULL)""",
        ),
    ),
    Migration(
        4, "instance registry",
        sqlite=(
            """CREATE TABLE IF NOT EXISTS instance_records (
                instance_id TEXT PRIMARY KEY, hotkey TEXT NOT NULL, chute_id TEXT NOT NULL,
                expires_at REAL NOT NULL, record TEXT NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS instance_records_chute ON instance_records (chute_id, expires_at)",
        ),
        postgresql=(
            """CREATE TABLE instance_records (
                instance_id TEXT PRIMARY KEY, hotkey TEXT NOT NULL, chute_id TEXT NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL, record TEXT NOT NULL)""",
            "CREATE INDEX instance_records_chute ON instance_records (chute_id, expires_at)",
        ),
    ),
    Migration(
        5, "chute registry: current chutes and their audit log",
        sqlite=(
            """CREATE TABLE chutes (
                chute_id TEXT PRIMARY KEY, owner TEXT NOT NULL, version INTEGER NOT NULL,
                retired INTEGER NOT NULL, spec TEXT NOT NULL, created_at REAL NOT NULL,
                updated_at REAL NOT NULL)""",
            """CREATE TABLE chute_versions (
                chute_id TEXT NOT NULL, version INTEGER NOT NULL, action TEXT NOT NULL,
                actor TEXT NOT NULL, at REAL NOT NULL, spec TEXT NOT NULL,
                PRIMARY KEY (chute_id, version))""",
        ),
        postgresql=(
            """CREATE TABLE chutes (
                chute_id TEXT PRIMARY KEY, owner TEXT NOT NULL, version INTEGER NOT NULL,
                retired BOOLEAN NOT NULL, spec TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
            """CREATE TABLE chute_versions (
                chute_id TEXT NOT NULL, version INTEGER NOT NULL, action TEXT NOT NULL,
                actor TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, spec TEXT NOT NULL,
                PRIMARY KEY (chute_id, version))""",
        ),
    ),
)

_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
              " name TEXT NOT NULL, applied_at REAL NOT NULL)",
    "postgresql": "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                  " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)",
}


def schema_version(db: Database) -> int:
    """The newest migration recorded in ``db`` (0 when none)."""
    rows = db.query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    return int(rows[0][0])


def migrate(db: Database, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Bring ``db`` to the newest schema; returns the versions applied now."""
    latest = max(m.version for m in migrations)
    applied: list[int] = []
    with db.transaction() as tx:
        if db.engine == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
        tx.execute(_TABLE[db.engine])
        current = int(tx.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0][0])
        if current > latest:
            raise SchemaVersionError(
                f"database schema is version {current}, newer than this code's {latest}; "
                "upgrade chutes-subnet")
        for m in sorted(migrations, key=lambda m: m.version):
            if m.version <= current:
                continue
            for stmt in (m.postgresql if db.engine == "postgresql" else m.sqlite):
                tx.execute(stmt)
            tx.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                       (m.version, m.name, time.time()))
            applied.append(m.version)
    return applied
