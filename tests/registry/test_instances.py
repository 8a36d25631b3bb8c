"""The instance registry (DESIGN B1): ids derived from the attested key, records held by
the hotkey that registered them; memory, SQLite and PostgreSQL stores behave the same."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chutes_subnet.e2ee import KeyPair
from chutes_subnet.e2ee._kem import PUBLIC_KEY_SIZE
from chutes_subnet.instance_id import PUBLIC_KEY_BYTES, instance_id_for_b64, instance_id_for_key
from chutes_subnet.registry import (
    InstanceConflict,
    InstanceRecord,
    InvalidInstanceRecord,
    MemoryInstanceRegistry,
    SQLInstanceRegistry,
    SQLiteInstanceRegistry,
    open_registry,
)
from chutes_subnet.stores.database import PostgresDatabase

HONEST, THIEF = "5Honest", "5Thief"


def record(kp: KeyPair, *, hotkey: str = HONEST, uid: int = 1, expires: float = 100.0,
           url: str = "http://honest:8091") -> InstanceRecord:
    return InstanceRecord(instance_id=kp.instance_id, chute_id="c1", model="m1", url=url,
                          hotkey=hotkey, uid=uid, e2e_pubkey=kp.public_b64, verified_at=0.0,
                          expires_at=expires, score=1.0)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    if request.param == "memory":
        yield MemoryInstanceRegistry()
        return
    if request.param == "sqlite":
        r = SQLiteInstanceRegistry(tmp_path / "r.db", cache_seconds=0)
    else:
        r = SQLInstanceRegistry(PostgresDatabase(request.getfixturevalue("postgres_url")),
                                cache_seconds=0, owns_db=True)
    yield r
    r.close()


def test_instance_id_is_the_first_128_bits_of_sha256_of_the_key() -> None:
    kp = KeyPair.generate()
    assert instance_id_for_key(kp.public_bytes) == hashlib.sha256(kp.public_bytes).hexdigest()[:32]
    assert kp.instance_id == instance_id_for_key(kp.public_bytes)
    assert kp.fingerprint == kp.instance_id[:16]  # the logged fingerprint is its prefix
    assert instance_id_for_key(b"\x00" * 1184) == "7081ba3d8887be22551f56b5f50da675"  # fixed vector
    with pytest.raises(TypeError):
        instance_id_for_key(b"")
    assert PUBLIC_KEY_BYTES == PUBLIC_KEY_SIZE
    assert instance_id_for_b64(kp.public_b64) == kp.instance_id
    for bad in ("cGs=", "not base64!", kp.public_b64[:-4]):
        with pytest.raises(ValueError):
            instance_id_for_b64(bad)


def test_a_record_not_named_by_its_key_is_refused(reg) -> None:
    kp, other = KeyPair.generate(), KeyPair.generate()
    for bad in (dataclasses.replace(record(kp), instance_id="honest-1"),
                dataclasses.replace(record(kp), instance_id=other.instance_id),
                dataclasses.replace(record(kp), e2e_pubkey="cGs="),
                dataclasses.replace(record(kp), hotkey="")):
        with pytest.raises(InvalidInstanceRecord):
            reg.upsert(bad)
    assert reg.list_verified(now=0) == []


def test_a_second_hotkey_presenting_a_registered_key_is_refused_and_logged(reg, caplog) -> None:
    kp = KeyPair.generate()
    honest = record(kp)
    reg.upsert(honest)
    stolen = record(kp, hotkey=THIEF, uid=2, url="http://thief:8091", expires=500.0)
    with caplog.at_level(logging.WARNING, logger="chutes_subnet.registry"), \
            pytest.raises(InstanceConflict) as exc:
        reg.upsert(stolen)
    assert exc.value.holder_uid == 1 and exc.value.claimant_uid == 2
    assert f"instance {kp.instance_id} is registered by uid 1; refused for uid 2" in caplog.text
    assert reg.get(kp.instance_id) == honest
    assert reg.list_verified(now=50) == [honest]  # traffic still goes to the honest url


def test_only_the_holder_refreshes_or_removes_its_record(reg) -> None:
    kp = KeyPair.generate()
    reg.upsert(record(kp))
    refreshed = record(kp, expires=300.0)
    reg.upsert(refreshed)  # the holder refreshes
    assert reg.get(kp.instance_id) == refreshed
    assert reg.remove(THIEF, kp.instance_id) is False  # not the thief
    assert reg.get(kp.instance_id) == refreshed
    assert reg.remove(HONEST, kp.instance_id) is True
    assert reg.get(kp.instance_id) is None and reg.remove(HONEST, kp.instance_id) is False


def test_an_expired_record_holds_its_key_until_pruned(reg) -> None:
    kp = KeyPair.generate()
    reg.upsert(record(kp, expires=10.0))
    assert reg.list_verified(now=20) == []
    with pytest.raises(InstanceConflict):
        reg.upsert(record(kp, hotkey=THIEF, uid=2, expires=1000.0))
    assert reg.knows_chute("c1")
    assert reg.prune(expired_before=5.0) == 0
    assert reg.prune(expired_before=11.0) == 1
    assert not reg.knows_chute("c1")
    reg.upsert(record(kp, hotkey=THIEF, uid=2, expires=1000.0))  # free again once pruned


def test_validator_statements_survive_every_store(reg) -> None:
    kp = KeyPair.generate()
    rec = dataclasses.replace(record(kp), statements=('{"v":1,"a":"x"}', '{"v":1,"b":"y"}'))
    reg.upsert(rec)
    assert reg.get(kp.instance_id) == rec
    assert reg.list_verified(now=0)[0].statements == rec.statements


def test_one_hotkey_may_hold_many_instances(reg) -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    reg.upsert(record(a))
    reg.upsert(record(b, url="http://honest:8092"))
    assert {r.instance_id for r in reg.list_verified(now=0)} == {a.instance_id, b.instance_id}


def test_sqlite_rows_are_checked_again_when_read(tmp_path: Path, caplog) -> None:
    path = tmp_path / "r.db"
    writer = SQLiteInstanceRegistry(path)
    kp, forged = KeyPair.generate(), KeyPair.generate()
    writer.upsert(record(kp))
    # a row written around the API: someone else's key under an id it does not derive
    bad = dataclasses.asdict(record(forged))
    bad["instance_id"] = kp.instance_id[:-1] + ("0" if kp.instance_id[-1] != "0" else "1")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO instance_records VALUES (?, ?, ?, ?, ?)",
                   (bad["instance_id"], HONEST, "c1", 100.0, json.dumps(bad)))
    reader = SQLiteInstanceRegistry(path, cache_seconds=0)
    with caplog.at_level(logging.WARNING, logger="chutes_subnet.registry"):
        live = reader.list_verified(now=0)
    assert [r.instance_id for r in live] == [kp.instance_id]
    assert "ignoring a stored record" in caplog.text
    assert reader.get(bad["instance_id"]) is None


def test_sqlite_get_after_a_write_reads_one_row_not_the_table(tmp_path: Path) -> None:
    """A validator publishing n instances reads each record before writing it, and
    every write drops the read cache: a get() that re-read the table made a round
    read n² rows (4,096 instances: ~16 M row decodes on the event loop)."""
    reg = SQLiteInstanceRegistry(tmp_path / "r.db")
    keys = [KeyPair.generate() for _ in range(6)]
    for kp in keys:
        reg.upsert(record(kp))
    rows_read: list[int] = []
    query = reg.db.query

    def counting(sql: str, params: Any = ()) -> Any:
        rows = query(sql, params)
        rows_read.append(len(rows))
        return rows

    reg.db.query = counting  # type: ignore[method-assign]
    for kp in keys:
        assert reg.get(kp.instance_id) == record(kp)
        reg.upsert(dataclasses.replace(record(kp), score=0.25))
        got = reg.get(kp.instance_id)
        assert got is not None and got.score == 0.25  # the write is seen at once
    assert reg.get(KeyPair.generate().instance_id) is None
    assert rows_read and max(rows_read) == 1


def test_sqlite_conflict_holds_across_processes_views(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    first, second = SQLiteInstanceRegistry(path), SQLiteInstanceRegistry(path)
    kp = KeyPair.generate()
    first.upsert(record(kp))
    with pytest.raises(InstanceConflict):
        second.upsert(record(kp, hotkey=THIEF, uid=2))


def test_a_claim_racing_an_uncommitted_one_on_postgres_is_refused(postgres_url: str) -> None:
    """Validator A has inserted the key for its hotkey but not committed; B's upsert for
    another hotkey reads no holder, then waits on A's row: once A commits, B is refused
    (the ON CONFLICT guard), never a silent takeover."""
    import threading

    import psycopg

    kp = KeyPair.generate()
    b = SQLInstanceRegistry(PostgresDatabase(postgres_url), cache_seconds=0, owns_db=True)
    honest = record(kp)
    outcome: list[BaseException | None] = []
    with psycopg.connect(postgres_url) as a:  # a transaction left open
        a.execute("INSERT INTO instance_records VALUES (%s, %s, %s, %s, %s)",
                  (kp.instance_id, HONEST, "c1", 100.0, json.dumps(dataclasses.asdict(honest))))

        def claim() -> None:
            try:
                b.upsert(record(kp, hotkey=THIEF, uid=2, url="http://thief:8091"))
                outcome.append(None)
            except InstanceConflict as exc:
                outcome.append(exc)

        t = threading.Thread(target=claim)
        t.start()
        t.join(timeout=1.0)
        assert t.is_alive()  # B waits on A's uncommitted row
        a.commit()
        t.join(timeout=10)
    assert isinstance(outcome[0], InstanceConflict)
    assert b.get(kp.instance_id) == honest
    b.close()


def test_open_registry_postgres(postgres_url: str) -> None:
    writer, reader = open_registry(postgres_url), open_registry(postgres_url)
    kp = KeyPair.generate()
    writer.upsert(record(kp))
    reader.refresh()  # what the gateway's flush loop does once a second
    assert [r.instance_id for r in reader.list_verified(now=0)] == [kp.instance_id]
    writer.close()
    reader.close()


def test_open_registry_urls(tmp_path: Path) -> None:
    assert isinstance(open_registry("memory://"), MemoryInstanceRegistry)
    assert isinstance(open_registry(f"sqlite://{tmp_path / 'x.db'}"), SQLiteInstanceRegistry)
    for bad in ("redis://localhost", "sqlite://"):
        with pytest.raises(ValueError, match="is not supported: use sqlite:///path"):
            open_registry(bad)
