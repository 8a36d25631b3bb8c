"""API keys: stored hashed, authenticated in constant time, revoked; bearer parsing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chutes_subnet.errors import AuthenticationError
from chutes_subnet.gateway.api_keys import (
    KEY_PREFIX,
    MemoryApiKeyStore,
    SQLiteApiKeyStore,
    hash_key,
    parse_bearer,
)


def test_keys_are_stored_hashed_and_authenticate(tmp_path: Path) -> None:
    store = SQLiteApiKeyStore(tmp_path / "k.db")
    secret, record = store.create("alice", quota_tokens=10, rate=2.5)
    assert secret.startswith(KEY_PREFIX) and len(secret) > 40
    assert store.authenticate(secret) == record
    dump = "\n".join(sqlite3.connect(tmp_path / "k.db").iterdump())
    assert secret not in dump and secret[len(KEY_PREFIX):] not in dump
    raw = sqlite3.connect(tmp_path / "k.db").execute("SELECT key_hash FROM api_keys").fetchone()
    assert bytes(raw[0]) == hash_key(secret)
    with pytest.raises(AuthenticationError):
        store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert store.revoke(record.key_id)
    with pytest.raises(AuthenticationError):
        store.authenticate(secret)


def test_memory_keys_revoke_and_validation() -> None:
    store = MemoryApiKeyStore()
    secret, record = store.create("bob")
    assert store.authenticate(secret).key_id == record.key_id
    assert store.revoke(record.key_id) and not store.revoke("nope")
    with pytest.raises(AuthenticationError):
        store.authenticate(secret)
    with pytest.raises(ValueError):
        store.create("x", rate=0)


@pytest.mark.parametrize("value", [None, "", "Basic abc", "Bearer ", "Bearer " + "a" * 200])
def test_parse_bearer_rejects(value: str | None) -> None:
    with pytest.raises(AuthenticationError):
        parse_bearer(value)


def test_parse_bearer_accepts_case_insensitive_scheme() -> None:
    assert parse_bearer("bearer csk_x") == "csk_x"
