"""One SQL connection, SQLite or PostgreSQL, behind the same three calls.

The ledger's SQL is written once with ``?`` placeholders and standard SQL
(``INSERT ... ON CONFLICT DO NOTHING``, ``RETURNING``); this adapter translates the
placeholders for psycopg 3 and gives each backend its way of taking the write lock:

* SQLite: ``BEGIN IMMEDIATE`` (one writer per file; readers never block);
* PostgreSQL: ``SELECT ... FOR UPDATE`` on the rows a transaction will change
  (:attr:`SqlDb.for_update` is appended to such selects).

Schema versions are applied in order inside one transaction each and recorded in
``schema_migrations`` (one row per applied version), so several processes starting
at once agree on the schema.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Cursor", "SqlDb", "open_sqldb"]


class Cursor(Protocol):
    """What a transaction body may call."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    @property
    def rowcount(self) -> int: ...


def _pg_sql(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgCursor:
    """psycopg cursor that accepts ``?`` placeholders."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cur.execute(_pg_sql(sql), tuple(params))

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)


class SqlDb:
    """A connection plus the backend's transaction and lock conventions."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.is_postgres = url.startswith(("postgresql://", "postgres://"))
        self.for_update = " FOR UPDATE" if self.is_postgres else ""
        self._lock = threading.Lock()
        if self.is_postgres:
            import psycopg

            self._pg = psycopg.connect(url, autocommit=True, connect_timeout=int(timeout))
        else:
            path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._sqlite = sqlite3.connect(path, check_same_thread=False, timeout=timeout,
                                           isolation_level=None)
            self._sqlite.execute("PRAGMA journal_mode=WAL")
            self._sqlite.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A write transaction: committed on normal exit, rolled back on any error."""
        with self._lock:
            if self.is_postgres:
                with self._pg.transaction(), self._pg.cursor() as cur:
                    yield _PgCursor(cur)
                return
            cur = self._sqlite.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only statement (its own snapshot)."""
        with self._lock:
            if self.is_postgres:
                with self._pg.cursor() as cur:
                    cur.execute(_pg_sql(sql), tuple(params))
                    return list(cur.fetchall())
            return self._sqlite.execute(sql, tuple(params)).fetchall()

    def migrate(self, migrations: Sequence[str]) -> int:
        """Apply ``migrations[i]`` as schema version ``i + 1`` unless already applied;
        returns the schema version now in place."""
        with self.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        for version, script in enumerate(migrations, start=1):
            with self.transaction() as cur:
                if self.is_postgres:  # one migrator at a time across processes
                    cur.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                cur.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,))
                if cur.fetchone() is not None:
                    continue
                for statement in filter(None, (s.strip() for s in script.split(";"))):
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations VALUES (?, CURRENT_TIMESTAMP)",
                            (version,))
        return len(migrations)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            (self._pg if self.is_postgres else self._sqlite).close()


def open_sqldb(url: str) -> SqlDb:
    """``postgresql://…`` or a SQLite path / ``sqlite:///path``."""
    return SqlDb(url)
