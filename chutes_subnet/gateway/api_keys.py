"""Gateway API keys: created once, stored only as hashes, checked on every request.

A key is ``csk_`` followed by 32 random bytes in URL-safe base64 (256 bits of entropy),
so a single SHA-256 is a sound storage hash: there is nothing to brute-force and a slow
password KDF would only cost latency on every request. The database holds
``sha256(key)``, a short public ``key_id`` (used in logs, metering and nonce scopes) and
the key's limits; the secret itself is shown once, by :func:`create_key`'s caller.

Lookup is by hash (an index probe); the final equality check uses
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from chutes_subnet.errors import AuthenticationError
from chutes_subnet.stores.database import Database, SQLiteDatabase

__all__ = [
    "KEY_PREFIX",
    "ApiKey",
    "ApiKeyStore",
    "MemoryApiKeyStore",
    "SQLApiKeyStore",
    "SQLiteApiKeyStore",
    "generate_key",
    "hash_key",
    "parse_bearer",
]

KEY_PREFIX = "csk_"
_MAX_KEY_CHARS = 128
_MAX_CACHED_KEYS = 100_000


@dataclass(frozen=True)
class ApiKey:
    """A key's public record (never holds the secret)."""

    key_id: str
    name: str
    quota_tokens: int | None = None  #: lifetime token quota; None = unlimited
    rate: float | None = None  #: sustained requests/second; None = unlimited
    burst: int | None = None  #: bucket size; default max(1, 2 * rate)
    created_at: float = 0.0
    revoked: bool = False


def generate_key() -> str:
    """A fresh random API key string."""
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def hash_key(secret: str) -> bytes:
    """Storage hash of a key (SHA-256 of its UTF-8 bytes)."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def parse_bearer(header_value: str | None) -> str:
    """Extract the key from an ``Authorization: Bearer <key>`` value.

    Raises :class:`AuthenticationError` when missing or malformed.
    """
    if not header_value:
        raise AuthenticationError("missing api key")
    scheme, _, token = header_value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_KEY_CHARS:
        raise AuthenticationError("malformed authorization header")
    return token


class ApiKeyStore(Protocol):
    """Where the gateway looks keys up."""

    def create(
        self, name: str, *, quota_tokens: int | None = None, rate: float | None = None,
        burst: int | None = None,
    ) -> tuple[str, ApiKey]: ...

    def authenticate(self, secret: str) -> ApiKey: ...

    def list(self) -> list[ApiKey]: ...

    def revoke(self, key_id: str) -> bool: ...


def _new_record(name: str, quota_tokens: int | None, rate: float | None,
                burst: int | None) -> tuple[str, bytes, ApiKey]:
    if not name or len(name) > 200:
        raise ValueError("key name must be 1..200 characters")
    if quota_tokens is not None and quota_tokens < 0:
        raise ValueError("quota_tokens must be >= 0")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0")
    secret = generate_key()
    digest = hash_key(secret)
    rec = ApiKey(key_id=digest[:6].hex(), name=name, quota_tokens=quota_tokens, rate=rate,
                 burst=burst, created_at=time.time())
    return secret, digest, rec


class MemoryApiKeyStore:
    """Keys held in a dict (tests, single-process demos)."""

    def __init__(self) -> None:
        self._by_hash: dict[bytes, ApiKey] = {}
        self._lock = threading.Lock()

    def create(self, name: str, *, quota_tokens: int | None = None, rate: float | None = None,
               burst: int | None = None) -> tuple[str, ApiKey]:
        """Create a key; returns ``(secret, record)``. The secret is not stored."""
        secret, digest, rec = _new_record(name, quota_tokens, rate, burst)
        with self._lock:
            self._by_hash[digest] = rec
        return secret, rec

    def authenticate(self, secret: str) -> ApiKey:
        """The record of a valid, unrevoked key, else :class:`AuthenticationError`."""
        rec = self._by_hash.get(hash_key(secret))
        if rec is None or rec.revoked:
            raise AuthenticationError("invalid api key")
        return rec

    def list(self) -> list[ApiKey]:
        """All key records."""
        with self._lock:
            return sorted(self._by_hash.values(), key=lambda r: r.created_at)

    def revoke(self, key_id: str) -> bool:
        """Revoke by key id; True if a key was found."""
        with self._lock:
            for digest, rec in self._by_hash.items():
                if rec.key_id == key_id:
                    self._by_hash[digest] = _replace_revoked(rec)
                    return True
        return False


def _replace_revoked(rec: ApiKey) -> ApiKey:
    return replace(rec, revoked=True)


class SQLApiKeyStore:
    """Keys in a SQL database (:mod:`chutes_subnet.stores.database`: SQLite or PostgreSQL),
    shared by the ``keys`` CLI and every gateway replica.

    Successful lookups are cached for ``cache_seconds`` so the hot path is a dict hit;
    a revocation made elsewhere takes effect within that window.
    """

    def __init__(self, db: Database, *, cache_seconds: float = 5.0,
                 owns_db: bool = False) -> None:
        self.db = db
        #: lookups may wait on the network (the gateway calls them off its event loop)
        self.blocking = db.blocking
        self._owns_db = owns_db
        self._cache: dict[bytes, tuple[float, ApiKey]] = {}
        self._cache_seconds = cache_seconds

    def create(self, name: str, *, quota_tokens: int | None = None, rate: float | None = None,
               burst: int | None = None) -> tuple[str, ApiKey]:
        """Create a key; returns ``(secret, record)``. Only the hash is written."""
        secret, digest, rec = _new_record(name, quota_tokens, rate, burst)
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO api_keys (key_hash, key_id, name, quota_tokens, rate, burst,"
                " created_at, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (digest, rec.key_id, rec.name, rec.quota_tokens, rec.rate, rec.burst,
                 rec.created_at, False),
            )
        return secret, rec

    def peek(self, secret: str) -> ApiKey | None:
        """The cached record of ``secret`` if fresh (no I/O), else None."""
        hit = self._cache.get(hash_key(secret))
        if hit is not None and time.monotonic() - hit[0] < self._cache_seconds:
            return hit[1]
        return None

    def authenticate(self, secret: str) -> ApiKey:
        """The record of a valid, unrevoked key, else :class:`AuthenticationError`."""
        digest = hash_key(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < self._cache_seconds:
            return hit[1]
        rows = self.db.query(
            "SELECT key_hash, key_id, name, quota_tokens, rate, burst, created_at, revoked"
            " FROM api_keys WHERE key_hash = ?", (digest,),
        )
        row = rows[0] if rows else None
        if row is None or not hmac.compare_digest(bytes(row[0]), digest) or row[7]:
            self._cache.pop(digest, None)
            raise AuthenticationError("invalid api key")
        rec = _row_to_key(row[1:])
        if len(self._cache) >= _MAX_CACHED_KEYS:
            self._cache.clear()  # bounded memory; a miss only costs one lookup
        self._cache[digest] = (now, rec)
        return rec

    def list(self) -> list[ApiKey]:
        """All key records, oldest first."""
        rows = self.db.query(
            "SELECT key_id, name, quota_tokens, rate, burst, created_at, revoked"
            " FROM api_keys ORDER BY created_at"
        )
        return [_row_to_key(r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        """Revoke by key id; True if a key was found."""
        with self.db.transaction() as tx:
            found = tx.execute("UPDATE api_keys SET revoked = ? WHERE key_id = ? RETURNING key_id",
                               (True, key_id))
        self._cache.clear()
        return bool(found)

    def close(self) -> None:
        """Close the database if this store opened it."""
        if self._owns_db:
            self.db.close()


class SQLiteApiKeyStore(SQLApiKeyStore):
    """Keys in a SQLite file (the embedded default)."""

    def __init__(self, path: str | Path, *, cache_seconds: float = 5.0) -> None:
        super().__init__(SQLiteDatabase(path), cache_seconds=cache_seconds, owns_db=True)


def _row_to_key(row: tuple[Any, ...]) -> ApiKey:
    key_id, name, quota, rate, burst, created_at, revoked = row
    return ApiKey(key_id=key_id, name=name, quota_tokens=quota, rate=rate, burst=burst,
                  created_at=created_at, revoked=bool(revoked))
