"""Single-use nonces: issued in batches bound to a scope, consumed atomically once.

A nonce is 128 random bits (32 hex digits) bound to a :class:`NonceScope`
(api-key/user, chute id, instance id) with a server-side TTL. ``consume`` succeeds for
exactly one caller, however many present the same nonce concurrently, and only with
the scope it was issued for, before it expires. It returns a
:class:`~chutes_subnet.single_use.Use` (``ACCEPTED``; ``UNKNOWN`` — never issued or
already used; ``EXPIRED``; or ``SCOPE`` — issued for another user/chute/instance); only
a store that cannot answer raises :class:`~chutes_subnet.errors.NonceStoreUnavailable`.
This is the consume semantics of every single-use store (:mod:`chutes_subnet.single_use`).

A nonce presented with the wrong scope is *not* burned: otherwise anyone who saw a
nonce in transit could void it for its owner.

Backends:

* :class:`MemoryNonceStore` — one process.
* :class:`SQLiteNonceStore` — the embedded default; survives restarts, shared by
  processes on one host (WAL). Consumption is one ``DELETE ... RETURNING`` statement;
  the consumes of one event-loop turn commit in one transaction, on a connection that
  never waits for a lock (a busy database hands them to one writer thread).
* :class:`RedisNonceStore` — several gateway replicas; consumption is one Lua script
  (atomic on the server); the consumes of one event-loop turn go out in one write, over
  a lean pipelined connection (:mod:`chutes_subnet.stores.redis_scripts`).

The TTL told to clients (``NONCE_TTL_CLIENT_SECONDS``) is shorter than the server TTL
(``NONCE_TTL_SERVER_SECONDS``) so a nonce never dies server-side while a client still
believes it valid.

:class:`SeenNonceCache` is the miner's replay cache (a
:class:`~chutes_subnet.single_use.SingleUse` recorder): it remembers every nonce the
instance has served for the nonce TTL and refuses a second use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chutes_subnet.errors import NonceStoreUnavailable
from chutes_subnet.single_use import Use
from chutes_subnet.wire.protocol import NONCE_TTL_SERVER_SECONDS

__all__ = [
    "NonceScope",
    "NonceStore",
    "MemoryNonceStore",
    "SQLiteNonceStore",
    "RedisNonceStore",
    "SeenNonceCache",
    "open_nonce_store",
    "new_nonce",
]

MAX_ISSUE = 256

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NonceScope:
    """Who may use a nonce, for which chute, on which instance."""

    user: str
    chute_id: str
    instance_id: str

    def encode(self) -> str:
        return "\x1f".join((self.user, self.chute_id, self.instance_id))


def new_nonce() -> str:
    """128 bits from the OS CSPRNG, hex encoded."""
    return secrets.token_hex(16)


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_ISSUE:
        raise ValueError(f"count must be between 1 and {MAX_ISSUE}")


class NonceStore(Protocol):
    """Issues nonces bound to a scope; the async single-use store of invoke nonces."""

    async def issue(self, scope: NonceScope, count: int,
                    ttl: float = NONCE_TTL_SERVER_SECONDS) -> list[str]: ...

    async def consume(self, nonce: str, scope: NonceScope) -> Use:
        """:attr:`Use.ACCEPTED` exactly once for an issued, unexpired nonce of ``scope``."""
        ...

    async def aclose(self) -> None: ...


class MemoryNonceStore:
    """In-process store (tests, single-process gateways)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._items: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    async def issue(self, scope: NonceScope, count: int, ttl: float = NONCE_TTL_SERVER_SECONDS) -> list[str]:
        _check_count(count)
        now = self._clock()
        nonces = [new_nonce() for _ in range(count)]
        with self._lock:
            self._sweep(now)
            for n in nonces:
                self._items[n] = (scope.encode(), now + ttl)
        return nonces

    async def consume(self, nonce: str, scope: NonceScope) -> Use:
        now = self._clock()
        with self._lock:
            item = self._items.get(nonce)
            if item is None:
                return Use.UNKNOWN
            bound, expires = item
            if not secrets.compare_digest(bound, scope.encode()):
                return Use.SCOPE
            del self._items[nonce]
        return Use.EXPIRED if expires <= now else Use.ACCEPTED

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 5.0
        dead = [n for n, (_, exp) in self._items.items() if exp <= now]
        for n in dead:
            del self._items[n]

    def __len__(self) -> int:
        return len(self._items)

    async def aclose(self) -> None:
        self._items.clear()


# No index on ``expires``: a consume then rewrites one b-tree page, not two (with 1 KiB
# pages about 1.6 KB of WAL a consume instead of 8.5 KB). Expired rows are swept by the
# writer thread a sixteenth of the key space at a time (a primary-key range scan).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS e2e_nonces (
    nonce   TEXT PRIMARY KEY,
    scope   TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
DROP INDEX IF EXISTS e2e_nonces_expires;
"""
#: a new nonce database's page size (an existing file keeps its own)
_PAGE_SIZE = 1024
#: nonces are lower-case hex: the sweep covers one leading digit's range per pass
_SWEEP_RANGES = [(d, chr(ord(d) + 1)) for d in "0123456789abcdef"]
#: seconds between two sweep passes (the whole key space every 16 passes)
_SWEEP_EVERY = 1.0


#: seconds the consume writer thread waits for work before it ends
_WRITER_IDLE_SECONDS = 5.0
#: inline consume commits between two WAL checkpoints (run by the writer thread)
_CHECKPOINT_EVERY = 512


class SQLiteNonceStore:
    """File-backed store: survives restarts; safe across processes (WAL, busy timeout).

    ``consume`` never waits on the event loop. The consumes of one loop turn are
    committed together at the turn's end, in one ``BEGIN IMMEDIATE`` transaction on a
    connection that does not wait (busy timeout 0, no checkpointing) when the write lock
    is free that instant: about 12 us for a lone consume, against about 90 us of latency
    for a round trip through a thread, and under load one transaction's locking and WAL
    syscalls shared by the turn's requests (the loop does less than when handing them
    to a thread that contends for the GIL). Otherwise (another process holds the lock,
    the writer thread is busy) they queue for one writer thread,
    which takes every consume waiting when it is free and runs them in one
    ``BEGIN IMMEDIATE`` transaction (a database locked by another process stalls that
    thread, not the loop). The writer thread also checkpoints the WAL every
    :data:`_CHECKPOINT_EVERY` inline commits (a checkpoint syncs the database file:
    never on the loop) and sweeps expired nonces, a sixteenth of the key space every
    :data:`_SWEEP_EVERY` seconds. A consume's answer is given only after its transaction
    committed; a failed transaction answers :class:`NonceStoreUnavailable` to all of its
    batch (nothing of it was consumed).
    ``issue`` (discovery, not the hot path) stays inline.
    """

    def __init__(self, path: str, clock: Callable[[], float] = time.time, busy_timeout_ms: int = 5000) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
            self._db.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # before WAL: new files only
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            #: the event loop's own connection: never waits for a lock, never checkpoints
            self._inline = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                           timeout=0)
            self._inline.execute("PRAGMA synchronous=NORMAL")
            self._inline.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error as exc:
            raise NonceStoreUnavailable("nonce database unavailable") from exc
        self._inline_lock = threading.Lock()
        self._inline_commits = 0
        #: consumes of the current loop turn, per loop, committed together at its end
        self._turns: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        self._maintenance_due = False
        self._next_sweep = 0.0
        self._sweep_at = 0
        #: (nonce, encoded scope, time of the call, future, its loop) waiting for the writer
        self._queue: list[tuple[str, str, float, asyncio.Future[Use], asyncio.AbstractEventLoop]] = []
        self._queue_lock = threading.Lock()
        self._writer_busy = False
        self._writer: threading.Thread | None = None
        #: released (by the loop) to wake the idle writer thread; a plain lock is the
        #: cheapest cross-thread signal
        self._wake = threading.Lock()
        self._wake.acquire()
        self._closing = False

    def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        try:
            with self._lock:
                return fn(self._db)
        except sqlite3.Error as exc:
            raise NonceStoreUnavailable("nonce database unavailable") from exc

    async def issue(self, scope: NonceScope, count: int, ttl: float = NONCE_TTL_SERVER_SECONDS) -> list[str]:
        _check_count(count)
        now = self._clock()
        nonces = [new_nonce() for _ in range(count)]
        rows = [(n, scope.encode(), now + ttl) for n in nonces]

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT INTO e2e_nonces(nonce, scope, expires) VALUES (?, ?, ?)", rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        self._run(write)
        if now >= self._next_sweep:
            self._request_maintenance()
        return nonces

    async def consume(self, nonce: str, scope: NonceScope) -> Use:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Use] = loop.create_future()
        item = (nonce, scope.encode(), self._clock(), fut, loop)
        if not self._writer_busy and not self._closing:
            # committed at the end of this loop turn with the turn's other consumes
            turn = self._turns.get(loop)
            if turn is None:
                turn = self._turns[loop] = []
                loop.call_soon(self._commit_turn, loop)
            turn.append(item)
        else:
            self._to_writer([item])
        return await fut

    def _to_writer(self, items: list[tuple[str, str, float, asyncio.Future[Use],
                                           asyncio.AbstractEventLoop]]) -> None:
        """Queue consumes for the writer thread (it settles them on their loops)."""
        with self._queue_lock:
            if self._closing:
                for item in items:
                    if not item[3].done():
                        item[3].set_exception(NonceStoreUnavailable("nonce store closed"))
                return
            self._queue.extend(items)
            wake, self._writer_busy = not self._writer_busy, True
            self._start_writer()
        if wake:
            self._wake.release()

    def _commit_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``: commit this turn's consumes in one transaction if the database is
        free this instant; else hand them to the writer thread."""
        batch = self._turns.pop(loop, [])
        if not batch:
            return
        results = self._commit_inline(batch)
        if results is None:
            self._to_writer(batch)
            return
        _settle(batch, results, loop)

    def _commit_inline(self, batch: list[tuple[str, str, float, Any, Any]]) -> list[Use] | None:
        """Results of ``batch`` committed now on the loop's connection; None: not now."""
        if self._closing or not self._inline_lock.acquire(blocking=False):
            return None
        try:
            results = _take_all(self._inline, batch)
        except sqlite3.Error:  # locked by a writer elsewhere (or failing): the thread decides
            with contextlib.suppress(sqlite3.Error):
                if self._inline.in_transaction:
                    self._inline.execute("ROLLBACK")
            return None
        finally:
            self._inline_lock.release()
        self._inline_commits += 1
        if self._inline_commits >= _CHECKPOINT_EVERY:
            self._inline_commits = 0
            self._request_maintenance()
        return results

    def _request_maintenance(self) -> None:
        """Have the writer thread sweep (when due) and checkpoint, off the event loop."""
        with self._queue_lock:
            if self._closing:
                return
            self._maintenance_due = True
            wake, self._writer_busy = not self._writer_busy, True
            self._start_writer()
        if wake:
            self._wake.release()

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_forever, daemon=True,
                                            name="nonce-consume")
            self._writer.start()

    def _write_forever(self) -> None:
        """Writer thread: sleep until woken, then commit queued consumes batch by batch
        until none is left."""
        while True:
            if not self._wake.acquire(timeout=_WRITER_IDLE_SECONDS):
                with self._queue_lock:
                    if not self._writer_busy:  # idle: end (a later consume starts another)
                        self._writer = None
                        return
                self._wake.acquire()  # a consume woke us just as we timed out
            self._drain()
            if self._closing:
                return

    def _drain(self) -> None:
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                maintain, self._maintenance_due = self._maintenance_due, False
                if not batch and not maintain:
                    self._writer_busy = False
                    return
            if maintain:
                with contextlib.suppress(NonceStoreUnavailable):  # retried at the next one
                    self._maintain()
            if not batch:
                continue
            try:
                results: list[Use] | NonceStoreUnavailable = self._run(
                    functools.partial(_take_all, batch=batch))
            except NonceStoreUnavailable as exc:
                _log.warning("nonce consume batch of %d failed (%s: %s): answered unavailable",
                             len(batch), type(exc.__cause__).__name__, exc.__cause__)
                results = exc
            for loop in {item[4] for item in batch}:
                with contextlib.suppress(RuntimeError):  # that loop is gone: nobody waits
                    loop.call_soon_threadsafe(_settle, batch, results, loop)

    def _maintain(self) -> None:
        """Writer thread: sweep one key range of expired nonces when due, then checkpoint
        the WAL (copies committed pages into the database file and syncs it)."""
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY
            low, high = _SWEEP_RANGES[self._sweep_at]
            self._sweep_at = (self._sweep_at + 1) % len(_SWEEP_RANGES)
            self._run(lambda db: db.execute(
                "DELETE FROM e2e_nonces WHERE nonce >= ? AND nonce < ? AND expires <= ?",
                (low, high, now)).fetchall())
        # fetched under the lock: a statement left pending on the shared connection (the
        # checkpoint answers a row) makes the next transaction on it fail to commit
        self._run(lambda db: db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())

    async def aclose(self) -> None:
        with self._queue_lock:
            self._closing = True
            writer, wake = self._writer, not self._writer_busy
            self._writer_busy = True
        if writer is not None:
            if wake:
                self._wake.release()
            await asyncio.get_running_loop().run_in_executor(None, writer.join)
        with self._lock:
            self._db.close()
        with self._inline_lock:
            self._inline.close()


def _take_all(db: sqlite3.Connection,
              batch: list[tuple[str, str, float, Any, Any]]) -> list[Use]:
    """Consume every nonce of ``batch`` in one transaction; one :class:`Use` each."""
    out: list[Use] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for nonce, enc, now, _, _ in batch:
            row = db.execute("DELETE FROM e2e_nonces WHERE nonce = ? AND scope = ? "
                             "RETURNING expires", (nonce, enc)).fetchone()
            if row is None:
                other = db.execute("SELECT 1 FROM e2e_nonces WHERE nonce = ?", (nonce,)).fetchone()
                out.append(Use.SCOPE if other else Use.UNKNOWN)
            else:
                out.append(Use.EXPIRED if row[0] <= now else Use.ACCEPTED)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return out


def _settle(batch: list[tuple[str, str, float, asyncio.Future[Use], asyncio.AbstractEventLoop]],
            results: list[Use] | NonceStoreUnavailable, loop: asyncio.AbstractEventLoop) -> None:
    """On ``loop``: answer that loop's consumes of a committed (or failed) batch."""
    for i, (_, _, _, fut, owner) in enumerate(batch):
        if owner is not loop or fut.done():  # another loop's, or its caller gave up
            continue
        if isinstance(results, NonceStoreUnavailable):
            fut.set_exception(NonceStoreUnavailable("nonce database unavailable"))
        else:
            fut.set_result(results[i])


# KEYS[1] = nonce key; ARGV[1] = expected scope. Returns 1 taken, 0 unknown, -1 other scope.
_CONSUME_LUA = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
return 1
"""


class RedisNonceStore:
    """Shared store for several gateway replicas; Redis expiry implements the TTL."""

    def __init__(self, url_or_client: Any, prefix: str = "chutes:e2e:nonce:", timeout: float = 2.0) -> None:
        import redis.asyncio as aioredis

        from chutes_subnet.stores.redis_scripts import RedisAddress, RedisReplyError, ScriptClient

        #: consumes go through the lean script client when the URL allows (plain TCP)
        self._scripts: ScriptClient | None = None
        if isinstance(url_or_client, str):
            self._r = aioredis.from_url(
                url_or_client, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=False
            )
            address = RedisAddress.parse(url_or_client)
            if address is not None:
                self._scripts = ScriptClient(address, timeout=timeout)
        else:
            self._r = url_or_client
        self._prefix = prefix
        import redis.exceptions

        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError,
                                                         RedisReplyError)
        self._no_script = redis.exceptions.NoScriptError
        self._sha = hashlib.sha1(_CONSUME_LUA.encode(), usedforsecurity=False).hexdigest()  # script id
        #: consumes of this loop turn, per loop: (key, scope, future), sent as one pipeline
        self._batches: dict[asyncio.AbstractEventLoop, list[tuple[str, bytes, asyncio.Future[Use]]]] = {}
        self._senders: set[asyncio.Task[None]] = set()  # held until done (not collected early)

    async def issue(self, scope: NonceScope, count: int, ttl: float = NONCE_TTL_SERVER_SECONDS) -> list[str]:
        _check_count(count)
        nonces = [new_nonce() for _ in range(count)]
        enc = scope.encode().encode()
        ms = max(1, int(ttl * 1000))
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for n in nonces:
                    pipe.set(self._prefix + n, enc, px=ms, nx=True)
                await pipe.execute()
        except self._errors as exc:
            raise NonceStoreUnavailable("nonce store unavailable") from exc
        return nonces

    async def consume(self, nonce: str, scope: NonceScope) -> Use:
        """One script call (atomic on the server). Over the lean client
        (:mod:`chutes_subnet.stores.redis_scripts`) the calls of one loop turn leave in one
        write; over a redis-py client they are queued and sent as one pipeline."""
        if self._scripts is not None:
            try:
                res = await self._scripts.evalsha(_CONSUME_LUA, [self._prefix + nonce],
                                                  [scope.encode()])
            except self._errors as exc:
                raise NonceStoreUnavailable("nonce store unavailable") from exc
            return _USE_OF_REPLY.get(res, Use.UNKNOWN)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Use] = loop.create_future()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = []
            task = loop.create_task(self._send(loop))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)
        batch.append((self._prefix + nonce, scope.encode().encode(), fut))
        return await fut

    async def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._batches.pop(loop)
        try:
            results = await self._run_scripts(batch)
        except self._errors as exc:
            for *_, fut in batch:
                if not fut.done():
                    err = NonceStoreUnavailable("nonce store unavailable")
                    err.__cause__ = exc
                    fut.set_exception(err)
            return
        for (*_, fut), res in zip(batch, results, strict=True):
            if not fut.done():  # its caller may have given up
                fut.set_result(_USE_OF_REPLY.get(res, Use.UNKNOWN))

    async def _run_scripts(self, batch: list[tuple[str, bytes, asyncio.Future[Use]]]) -> list[Any]:
        """EVALSHA for each item; the script is loaded (and the batch sent again) only
        when the server lacks it: a NOSCRIPT reply means that call did not run."""
        for attempt in (0, 1):
            async with self._r.pipeline(transaction=False) as pipe:
                for key, enc, _ in batch:
                    pipe.evalsha(self._sha, 1, key, enc)
                results = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, self._no_script) for r in results):
                await self._r.script_load(_CONSUME_LUA)
                continue
            for r in results:
                if isinstance(r, BaseException):
                    raise r
            return list(results)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._scripts is not None:
            await self._scripts.aclose()
        await self._r.aclose()


#: the consume script's reply -> the consume's answer (0: unknown or used)
_USE_OF_REPLY = {1: Use.ACCEPTED, -1: Use.SCOPE}


def open_nonce_store(url: str) -> NonceStore:
    """``memory://``, ``sqlite:///abs/path.db`` (or ``sqlite://rel.db``), ``redis://host:port/db``."""
    if url.startswith("memory://"):
        return MemoryNonceStore()
    if url.startswith("sqlite://"):
        return SQLiteNonceStore(url[len("sqlite://") :] or ":memory:")
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisNonceStore(url)
    raise ValueError(f"unsupported nonce store URL scheme: {url.split(':', 1)[0]!r}")


class SeenNonceCache:
    """A miner's replay cache: remembers served nonces for ``ttl`` seconds.

    Bounded: when full of unexpired entries it refuses new nonces (fail closed)
    rather than forgetting one that could then be replayed.
    """

    def __init__(self, ttl: float = NONCE_TTL_SERVER_SECONDS, max_entries: int = 1_000_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def consume(self, token: str) -> Use:
        """ACCEPTED the first time ``token`` is seen within the TTL; USED on a replay;
        FULL when full of live entries."""
        now = self._clock()
        with self._lock:
            while self._seen:
                oldest, exp = next(iter(self._seen.items()))
                if exp > now:
                    break
                del self._seen[oldest]
            if token in self._seen:
                return Use.USED
            if len(self._seen) >= self._max:
                return Use.FULL
            self._seen[token] = now + self._ttl
            return Use.ACCEPTED

    def __len__(self) -> int:
        return len(self._seen)
