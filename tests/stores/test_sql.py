"""The gateway's shared-state stores, run unchanged against SQLite and a real PostgreSQL
server: migrations, API keys, usage (no lost update under concurrency), the request
journal, and failure when the engine is unreachable."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from chutes_subnet.errors import AuthenticationError, SchemaVersionError, StoreUnavailable
from chutes_subnet.gateway.api_keys import SQLApiKeyStore, hash_key
from chutes_subnet.gateway.journal import JournalEntry, SQLJournal
from chutes_subnet.gateway.state_stores import open_gateway_stores
from chutes_subnet.gateway.usage import SQLUsageMeter, Usage
from chutes_subnet.stores import open_database
from chutes_subnet.stores.database import PostgresDatabase
from chutes_subnet.stores.migrations import MIGRATIONS, Migration, migrate, schema_version
from tests.servers import free_port

LATEST = max(m.version for m in MIGRATIONS)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "gateway.db")
    return request.getfixturevalue("postgres_url")


_NOW = time.time()


def _entry(key_id: str, n: int, at: float = _NOW) -> JournalEntry:
    return JournalEntry(at=at + n, key_id=key_id, chute_id="c", instance_id="i",
                        nonce_prefix=f"{n:08x}", e2e_version=2, stream=n % 2 == 0,
                        request_bytes=100 + n, response_bytes=200 + n, prompt_tokens=n,
                        completion_tokens=2 * n, status=200, duration_ms=1.5,
                        interrupted=n == 3)


def test_migrations_apply_once_and_record_versions(db_url: str) -> None:
    db = open_database(db_url)
    try:
        assert schema_version(db) == LATEST
        assert migrate(db) == []  # nothing left to apply
        names = [r[0] for r in db.query("SELECT name FROM schema_migrations ORDER BY version")]
        assert names == [m.name for m in MIGRATIONS]
    finally:
        db.close()


def test_concurrent_openers_migrate_exactly_once(db_url: str) -> None:
    applied: list[list[int]] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            db = open_database(db_url)
            applied.append([r[0] for r in db.query("SELECT version FROM schema_migrations")])
            db.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(sorted(v) == list(range(1, LATEST + 1)) for v in applied)


def test_a_database_newer_than_the_code_is_refused(db_url: str) -> None:
    db = open_database(db_url)
    future = (*MIGRATIONS, Migration(LATEST + 1, "from the future", ("SELECT 1",), ("SELECT 1",)))
    assert migrate(db, future) == [LATEST + 1]
    with pytest.raises(SchemaVersionError, match=f"version {LATEST + 1}, newer"):
        migrate(db)
    db.close()


def test_a_pre_migration_sqlite_file_upgrades_in_place(tmp_path: Path) -> None:
    """Files written before migrations existed (CREATE TABLE IF NOT EXISTS) keep their rows."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0].sqlite[0] + ";" + MIGRATIONS[0].sqlite[1] + ";")
    old.execute("INSERT INTO usage VALUES ('k', '2026-01-01', 2, 5, 7)")
    old.commit()
    old.close()
    stores = open_gateway_stores(str(path))
    assert stores.usage.totals("k") == Usage(2, 5, 7)
    assert schema_version(stores.db) == LATEST
    stores.close()


def test_keys_hashed_shared_and_revocable(db_url: str) -> None:
    a = open_gateway_stores(db_url)
    b = open_gateway_stores(db_url, key_cache_seconds=0.0)  # another replica
    try:
        secret, rec = a.keys.create("alice", quota_tokens=100, rate=2.5, burst=4)
        assert b.keys.authenticate(secret) == rec
        stored = [bytes(r[0]) for r in a.db.query("SELECT key_hash FROM api_keys")]
        assert stored == [hash_key(secret)]
        with pytest.raises(AuthenticationError):
            b.keys.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
        assert [k.key_id for k in b.keys.list()] == [rec.key_id]
        assert a.keys.revoke(rec.key_id) and not a.keys.revoke("nope")
        with pytest.raises(AuthenticationError):
            b.keys.authenticate(secret)
        assert b.keys.list()[0].revoked is True
    finally:
        a.close()
        b.close()


def test_key_cache_window_then_revocation_takes_effect(db_url: str) -> None:
    db = open_database(db_url)
    writer, reader = SQLApiKeyStore(db), SQLApiKeyStore(db, cache_seconds=3600)
    secret, rec = writer.create("bob")
    assert reader.peek(secret) is None  # nothing cached yet: no I/O answer
    assert reader.authenticate(secret) == rec
    assert reader.peek(secret) == rec
    writer.revoke(rec.key_id)
    assert reader.authenticate(secret) == rec  # cached for its window (documented lag)
    with pytest.raises(AuthenticationError):
        SQLApiKeyStore(db, cache_seconds=0).authenticate(secret)
    db.close()


@pytest.mark.parametrize("write_through", [False, True])
def test_usage_from_concurrent_replicas_is_exact(db_url: str, write_through: bool) -> None:
    """8 writers on 2 meters (replicas) record 50 requests each: nothing lost."""
    dbs = [open_database(db_url) for _ in range(2)]
    meters = [SQLUsageMeter(db, write_through=write_through) for db in dbs]

    def work(meter: SQLUsageMeter, n: int) -> None:
        for i in range(50):
            meter.record("k", 3, n)
            if i % 10 == 0 and not write_through:
                meter.flush()

    threads = [threading.Thread(target=work, args=(meters[i % 2], i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m in meters:
        m.flush()
    want = Usage(400, 1200, 50 * sum(range(8)))
    assert [m.totals("k") for m in meters] == [want, want]
    assert SQLUsageMeter(dbs[0]).totals("k") == want  # a fresh reader agrees
    for db in dbs:
        db.close()


def test_usage_write_through_commits_before_returning(db_url: str) -> None:
    db, other = open_database(db_url), open_database(db_url)
    meter = SQLUsageMeter(db, write_through=True)
    meter.record("k", 10, -5)  # a miner's negative count is clamped
    assert SQLUsageMeter(other).totals("k") == Usage(1, 10, 0)  # no flush needed
    batched = SQLUsageMeter(db, write_through=False)
    batched.record("k", 1, 1)
    assert SQLUsageMeter(other).totals("k") == Usage(1, 10, 0)  # batched: not yet
    assert batched.totals("k") == Usage(2, 11, 1)  # its own view includes pending
    batched.flush()
    assert SQLUsageMeter(other).totals("k") == Usage(2, 11, 1)
    db.close()
    other.close()


def test_usage_totals_refresh_on_flush_for_other_replicas(db_url: str) -> None:
    a_db, b_db = open_database(db_url), open_database(db_url)
    a, b = SQLUsageMeter(a_db, write_through=True), SQLUsageMeter(b_db, write_through=True)
    assert b.peek("k") is None and b.totals("k") == Usage()
    a.record("k", 4, 6)
    assert b.peek("k") == Usage()  # b's view lags until its next flush
    b.flush()
    assert b.peek("k") == Usage(1, 4, 6)
    a_db.close()
    b_db.close()


def test_journal_is_shared_newest_first_and_scoped(db_url: str) -> None:
    a_db, b_db = open_database(db_url), open_database(db_url)
    a, b = SQLJournal(a_db), SQLJournal(b_db)
    for n in range(5):
        a.record(_entry("k1", n))
    a.record(_entry("k2", 9))
    assert b.recent("k1") == []  # not flushed yet
    assert [e.nonce_prefix for e in a.recent("k1", 2)] == ["00000004", "00000003"]
    a.flush()
    got = b.recent("k1", 10)
    assert got == [_entry("k1", n) for n in (4, 3, 2, 1, 0)]  # every field round-trips
    assert [e.key_id for e in b.recent("k2")] == ["k2"]
    a_db.close()
    b_db.close()


def test_journal_prunes_rows_past_retention(db_url: str) -> None:
    db = open_database(db_url)
    j = SQLJournal(db, retention_seconds=3600)
    j.record(_entry("k", 1, at=1.0))  # 1970: long past retention
    j.flush()
    assert j.recent("k") == []
    db.close()


def test_unreachable_postgres_is_store_unavailable() -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    with pytest.raises(StoreUnavailable, match="database unavailable"):
        PostgresDatabase(url, timeout=1.0)


def test_db_url_forms(tmp_path: Path) -> None:
    db = open_database(f"sqlite://{tmp_path / 'a.db'}")
    assert db.engine == "sqlite" and not db.blocking
    db.close()
    with pytest.raises(ValueError, match="--db must be"):
        open_database("mysql://x/y")


def test_keys_cli_on_postgres(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``chutes-subnet keys --db postgresql://…`` creates, lists and revokes keys there."""
    import json

    from chutes_subnet.gateway.cli import main

    assert main(["keys", "--db", postgres_url, "create", "--name", "alice",
                 "--quota-tokens", "100", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    stores = open_gateway_stores(postgres_url)
    try:
        assert stores.keys.authenticate(created["key"]).quota_tokens == 100
    finally:
        stores.close()
    assert main(["keys", "--db", postgres_url, "list"]) == 0
    assert created["key_id"] in capsys.readouterr().out
    assert main(["keys", "--db", postgres_url, "revoke", created["key_id"]]) == 0
    assert main(["keys", "--db", postgres_url, "revoke", created["key_id"]]) == 0  # idempotent
    assert main(["keys", "--db", postgres_url, "revoke", "no-such-key"]) == 1
