"""One small database seam for the gateway's shared state: SQLite or PostgreSQL.

Stores are written once against :class:`Database` and run unchanged on both engines.
Statements use ``?`` placeholders (the PostgreSQL adapter rewrites them to ``%s``)
and only SQL both engines speak (``INSERT ... ON CONFLICT``, ``RETURNING``).

* :class:`SQLiteDatabase` — the embedded default: one connection behind a lock, WAL,
  busy timeout; shared by processes on one host.
* :class:`PostgresDatabase` — psycopg 3 with a connection pool, a statement timeout
  and a connect timeout: shared by gateway replicas on many hosts.

Both run the versioned migrations of :mod:`chutes_subnet.stores.migrations` when
opened. Driver errors are translated in one place: an engine that cannot be reached
or answer in time raises :class:`~chutes_subnet.errors.StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from chutes_subnet.errors import StoreUnavailable

__all__ = [
    "Database",
    "PostgresDatabase",
    "SQLiteDatabase",
    "Transaction",
    "is_postgres_url",
    "open_database",
]

Row = tuple[Any, ...]


class Transaction(Protocol):
    """Statements inside one transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Database(Protocol):
    """A SQL engine the stores can share."""

    #: "sqlite" or "postgresql"
    engine: str
    #: True when calls may wait on the network (callers keep them off the event loop)
    blocking: bool

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def close(self) -> None: ...


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class _SQLiteTx:
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, [tuple(r) for r in rows])


class SQLiteDatabase:
    """A SQLite file (WAL); one connection, serialized by a lock."""

    engine = "sqlite"
    blocking = False

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0, migrate: bool = True) -> None:
        try:
            self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                         timeout=busy_timeout)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreUnavailable("database unavailable") from exc
        self._lock = threading.RLock()
        if migrate:
            from chutes_subnet.stores.migrations import migrate as run_migrations

            run_migrations(self)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT`` (rolled back on any exception)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable("database unavailable") from exc
            try:
                yield _SQLiteTx(self._conn)
                self._conn.execute("COMMIT")
            except BaseException as exc:
                self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreUnavailable("database unavailable") from exc
                raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """One read statement (autocommit)."""
        try:
            with self._lock:
                return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable("database unavailable") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _pg(sql: str) -> str:
    # Our statements hold no literal '?' or '%': a plain rewrite of the placeholders.
    return sql.replace("?", "%s")


class _PostgresTx:
    __slots__ = ("_cur",)

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cur.execute(_pg(sql), tuple(params))
        return self._cur.fetchall() if self._cur.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cur.executemany(_pg(sql), [tuple(r) for r in rows])


class PostgresDatabase:
    """A PostgreSQL server through a psycopg 3 connection pool.

    Every connection gets ``statement_timeout`` and the pool waits at most
    ``timeout`` seconds for a free connection, so a stalled server surfaces as
    :class:`StoreUnavailable` instead of a hung request.
    """

    engine = "postgresql"
    blocking = True

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0,
                 statement_timeout_ms: int = 5000, migrate: bool = True) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise RuntimeError("PostgreSQL support needs psycopg and psycopg-pool "
                               "(pip install 'psycopg[binary]' psycopg-pool)") from exc

        self._errors: tuple[type[BaseException], ...] = (psycopg.OperationalError,
                                                         psycopg.errors.QueryCanceled)
        from psycopg_pool import PoolTimeout

        self._errors += (PoolTimeout,)
        self._pool = ConnectionPool(
            url, min_size=min_size, max_size=max_size, timeout=timeout, open=False,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout)),
                    "options": f"-c statement_timeout={int(statement_timeout_ms)}"},
            check=ConnectionPool.check_connection, name="chutes-gateway")
        try:
            self._pool.open(wait=True, timeout=timeout)
        except self._errors as exc:
            self._pool.close()
            raise StoreUnavailable("database unavailable") from exc
        if migrate:
            from chutes_subnet.stores.migrations import migrate as run_migrations

            run_migrations(self)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction on a pooled connection (rolled back on any exception)."""
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield _PostgresTx(cur)
        except self._errors as exc:
            raise StoreUnavailable("database unavailable") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """One read statement."""
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def close(self) -> None:
        self._pool.close()


def open_database(url: str) -> Database:
    """``postgresql://…`` / ``postgres://…``, ``sqlite:///path``, or a plain file path."""
    if is_postgres_url(url):
        return PostgresDatabase(url)
    url = url.removeprefix("sqlite://")
    if not url or "://" in url:
        raise ValueError("--db must be a file path, sqlite:///path or postgresql://…")
    return SQLiteDatabase(url)
