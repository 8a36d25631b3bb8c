"""Single-use nonces: exactly-once under concurrency on every backend, expiry, scope."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest

from chutes_subnet.errors import NonceStoreUnavailable
from chutes_subnet.nonces import (
    MemoryNonceStore,
    NonceScope,
    RedisNonceStore,
    SeenNonceCache,
    SQLiteNonceStore,
    open_nonce_store,
)
from chutes_subnet.single_use import Use

SCOPE = NonceScope("key-1", "chute-1", "inst-1")
#: One loop for the test thread, so a Redis handle keeps its connections between calls.
_LOOP = asyncio.new_event_loop()
_RUN = _LOOP.run_until_complete
CONSUMERS = 64
NONCES = 20


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request, tmp_path: Path):
    """A factory of store handles that all share one backing state (file / server)."""
    created = []
    if request.param == "memory":
        shared = MemoryNonceStore()
        factory = lambda: shared  # noqa: E731
    elif request.param == "sqlite":
        factory = lambda: SQLiteNonceStore(str(tmp_path / "nonces.db"))  # noqa: E731
    else:
        redis_server = request.getfixturevalue("redis_server")
        prefix = f"t:{request.node.name}:"
        factory = lambda: RedisNonceStore(redis_server.url, prefix=prefix)  # noqa: E731

    def make():
        store = factory()
        created.append(store)
        return store

    yield make


def _rejected_reason(coro) -> str:
    use = _RUN(coro)
    assert isinstance(use, Use)
    return use.value


def test_exactly_once_under_concurrent_consumers(make_store):
    issuer = make_store()
    nonces = _RUN(issuer.issue(SCOPE, NONCES))
    assert len(set(nonces)) == NONCES
    # Each consumer thread gets its own handle (own connection where the backend has one).
    wins: dict[str, int] = {n: 0 for n in nonces}
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CONSUMERS)

    def consumer(i: int) -> None:
        barrier.wait()

        async def run():
            store = make_store()  # own handle, own connection, own event loop
            results = []
            for n in nonces:  # 64 threads race on each nonce in turn
                try:
                    results.append(await store.consume(n, SCOPE))
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    results.append(exc)
            if not isinstance(store, MemoryNonceStore):
                await store.aclose()
            return results

        for n, res in zip(nonces, asyncio.run(run()), strict=True):
            with lock:
                if res is Use.ACCEPTED:
                    wins[n] += 1
                elif res is not Use.UNKNOWN:
                    errors.append(res)

    threads = [threading.Thread(target=consumer, args=(i,)) for i in range(CONSUMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert wins == {n: 1 for n in nonces}


def test_scope_is_enforced_and_does_not_burn(make_store):
    store = make_store()
    [n] = _RUN(store.issue(SCOPE, 1))
    for other in (NonceScope("key-2", "chute-1", "inst-1"), NonceScope("key-1", "chute-2", "inst-1"),
                  NonceScope("key-1", "chute-1", "inst-2")):
        assert _rejected_reason(store.consume(n, other)) == "scope"
    assert _rejected_reason(store.consume(n, SCOPE)) == "accepted"
    assert _rejected_reason(store.consume(n, SCOPE)) == "unknown"


def test_unknown_nonce_rejected(make_store):
    assert _rejected_reason(make_store().consume("00" * 16, SCOPE)) == "unknown"


def test_issue_count_bounds(make_store):
    store = make_store()
    for bad in (0, 10_000):
        with pytest.raises(ValueError):
            _RUN(store.issue(SCOPE, bad))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_expiry_with_injected_clock(kind, tmp_path):
    clock = Clock()
    store = MemoryNonceStore(clock=clock) if kind == "memory" else SQLiteNonceStore(str(tmp_path / "n.db"), clock=clock)
    a, b = _RUN(store.issue(SCOPE, 2, ttl=10))
    clock.t += 9.9
    assert _rejected_reason(store.consume(a, SCOPE)) == "accepted"
    clock.t += 0.2
    assert _rejected_reason(store.consume(b, SCOPE)) == "expired"
    assert _rejected_reason(store.consume(b, SCOPE)) == "unknown"


def test_redis_expiry(redis_server):
    store = RedisNonceStore(redis_server.url, prefix="t:expiry:")
    [n] = _RUN(store.issue(SCOPE, 1, ttl=0.15))
    import time

    time.sleep(0.3)
    assert _rejected_reason(store.consume(n, SCOPE)) == "unknown"


def test_sqlite_survives_restart(tmp_path):
    path = str(tmp_path / "n.db")
    first = SQLiteNonceStore(path)
    [n] = _RUN(first.issue(SCOPE, 1))
    _RUN(first.aclose())
    second = SQLiteNonceStore(path)
    assert _rejected_reason(second.consume(n, SCOPE)) == "accepted"


def test_redis_down_is_unavailable_not_rejected():
    from tests.servers import free_port

    store = RedisNonceStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(NonceStoreUnavailable):
        _RUN(store.consume("ab" * 16, SCOPE))
    with pytest.raises(NonceStoreUnavailable):
        _RUN(store.issue(SCOPE, 1))


def test_open_nonce_store_urls(tmp_path, redis_server):
    assert isinstance(open_nonce_store("memory://"), MemoryNonceStore)
    assert isinstance(open_nonce_store(f"sqlite://{tmp_path}/x.db"), SQLiteNonceStore)
    assert isinstance(open_nonce_store(redis_server.url), RedisNonceStore)
    with pytest.raises(ValueError, match="unsupported"):
        open_nonce_store("ftp://x")


def test_server_ttl_longer_than_client_ttl():
    from chutes_subnet.wire.protocol import NONCE_TTL_CLIENT_SECONDS, NONCE_TTL_SERVER_SECONDS

    assert NONCE_TTL_SERVER_SECONDS > NONCE_TTL_CLIENT_SECONDS


def test_seen_cache_replay_expiry_and_fail_closed():
    clock = Clock()
    cache = SeenNonceCache(ttl=5, max_entries=2, clock=clock)
    assert cache.consume("a") is Use.ACCEPTED and cache.consume("a") is Use.USED
    assert cache.consume("b") is Use.ACCEPTED
    assert cache.consume("c") is Use.FULL  # full of live entries: refuse rather than forget
    clock.t += 6
    assert cache.consume("c").ok and cache.consume("a").ok


def test_sqlite_batched_consumes_answer_each_caller_exactly(tmp_path: Path) -> None:
    """Many consumes in flight on one handle (one writer batch): every nonce is taken
    once, a wrong scope is refused without burning, an unknown nonce is unknown."""
    store = SQLiteNonceStore(str(tmp_path / "n.db"))
    other = NonceScope("key-2", "chute-1", "inst-1")

    async def run() -> tuple[list[Use], list[Use]]:
        nonces = await store.issue(SCOPE, 50)
        calls = [store.consume(n, SCOPE) for n in nonces for _ in range(3)]
        calls += [store.consume(n, other) for n in nonces[:10]]
        calls.append(store.consume("f" * 32, SCOPE))
        first = await asyncio.gather(*calls)
        again = await asyncio.gather(*(store.consume(n, SCOPE) for n in nonces))
        await store.aclose()
        return first, again

    first, again = asyncio.run(run())
    per_nonce = [first[i * 3:i * 3 + 3] for i in range(50)]
    assert all(sorted(u.value for u in trio) == sorted(["accepted", "unknown", "unknown"])
               for trio in per_nonce)
    wrong_scope, unknown = first[150:160], first[160]
    # a wrong scope either arrived before the owner's consume (scope) or after (unknown)
    assert set(wrong_scope) <= {Use.SCOPE, Use.UNKNOWN} and unknown is Use.UNKNOWN
    assert set(again) == {Use.UNKNOWN}


def test_sqlite_consume_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """Another process holding the database's write lock delays the consume, not the
    loop: other tasks keep running, and the consume succeeds once the lock is gone."""
    import sqlite3

    path = str(tmp_path / "n.db")
    store = SQLiteNonceStore(path)
    [nonce] = _RUN(store.issue(SCOPE, 1))
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock, as a busy writer elsewhere holds it

    async def run() -> tuple[Use, int]:
        consume = asyncio.ensure_future(store.consume(nonce, SCOPE))
        ticks = 0
        for _ in range(20):  # 0.4 s with the lock held: the loop keeps ticking
            await asyncio.sleep(0.02)
            ticks += 1
        assert not consume.done()
        blocker.execute("ROLLBACK")
        return await asyncio.wait_for(consume, 10), ticks

    use, ticks = asyncio.run(run())
    blocker.close()
    assert use is Use.ACCEPTED and ticks == 20
    assert _RUN(store.consume(nonce, SCOPE)) is Use.UNKNOWN


def test_sqlite_inline_consumes_leave_checkpointing_to_the_writer_thread(tmp_path: Path) -> None:
    """Consumes committed inline (the loop's connection never checkpoints) still get
    their WAL copied into the database file, by the writer thread: the WAL stays
    bounded and a second handle (another process) sees every nonce gone."""
    import time

    from chutes_subnet import nonces as nonces_module

    path = tmp_path / "n.db"
    store = SQLiteNonceStore(str(path))
    issued = [n for _ in range(6) for n in _RUN(store.issue(SCOPE, 256))]
    db_before = path.stat().st_size
    for n in issued:
        assert _RUN(store.consume(n, SCOPE)) is Use.ACCEPTED
    deadline = time.monotonic() + 10
    while store._writer_busy and time.monotonic() < deadline:  # the last checkpoint runs
        time.sleep(0.01)
    assert len(issued) >= 2 * nonces_module._CHECKPOINT_EVERY
    assert path.stat().st_size > db_before  # pages were checkpointed into the file
    # without checkpoints the WAL holds every commit: >= 2 pages each (about 12 MB here)
    assert (tmp_path / "n.db-wal").stat().st_size < len(issued) * 4096
    other = SQLiteNonceStore(str(path))
    assert {_RUN(other.consume(n, SCOPE)) for n in issued[::97]} == {Use.UNKNOWN}
    _RUN(store.aclose())
    _RUN(other.aclose())


def test_sqlite_expired_nonces_are_swept_off_the_loop_range_by_range(tmp_path: Path) -> None:
    """Expired rows leave the file (one sixteenth of the key space a pass, on the writer
    thread); live ones stay; a database made with the old expires index loses it."""
    import sqlite3
    import time

    path = tmp_path / "n.db"
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE e2e_nonces (nonce TEXT PRIMARY KEY, scope TEXT NOT NULL, "
                      "expires REAL NOT NULL) WITHOUT ROWID; "
                      "CREATE INDEX e2e_nonces_expires ON e2e_nonces(expires);")
    old.close()
    clock = Clock()
    store = SQLiteNonceStore(str(path), clock=clock)
    expiring = _RUN(store.issue(SCOPE, 200, ttl=5))
    clock.t += 10
    live = _RUN(store.issue(SCOPE, 50, ttl=600))

    def rows() -> set[str]:
        with sqlite3.connect(path) as db:
            return {r[0] for r in db.execute("SELECT nonce FROM e2e_nonces")}

    for _ in range(16):  # each discovery a second later asks for one more sweep pass
        clock.t += 1.1
        live += _RUN(store.issue(SCOPE, 1, ttl=600))
        deadline = time.monotonic() + 5
        while store._writer_busy and time.monotonic() < deadline:
            time.sleep(0.005)
    assert rows() == set(live)  # every expired nonce swept, every live one kept
    assert set(expiring).isdisjoint(rows())
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                          "AND name = 'e2e_nonces_expires'").fetchone() == (0,)
    _RUN(store.aclose())


def test_sqlite_maintenance_never_breaks_a_discovery_racing_it(tmp_path: Path) -> None:
    """The writer thread's sweep and checkpoint share a connection with ``issue``: run
    back to back against 2,000 discoveries, none may fail (a statement left pending by
    the checkpoint once made the next commit fail: 'SQL statements in progress')."""
    store = SQLiteNonceStore(str(tmp_path / "n.db"))
    stop = threading.Event()

    def maintain() -> None:
        while not stop.is_set():
            store._next_sweep = 0.0
            with contextlib.suppress(NonceStoreUnavailable):
                store._maintain()

    thread = threading.Thread(target=maintain)
    thread.start()
    failures = 0
    try:
        for _ in range(2000):
            try:
                _RUN(store.issue(SCOPE, 1))
            except NonceStoreUnavailable:
                failures += 1
    finally:
        stop.set()
        thread.join()
    _RUN(store.aclose())
    assert failures == 0


def test_sqlite_failed_batch_consumes_nothing(tmp_path: Path) -> None:
    """A batch whose transaction cannot run answers 'unavailable' to each caller and
    leaves its nonces usable."""
    import sqlite3

    path = str(tmp_path / "n.db")
    store = SQLiteNonceStore(path, busy_timeout_ms=100)
    nonces = _RUN(store.issue(SCOPE, 3))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")

    async def run() -> list[object]:
        return await asyncio.gather(*(store.consume(n, SCOPE) for n in nonces),
                                    return_exceptions=True)

    out = asyncio.run(run())
    blocker.execute("ROLLBACK")
    blocker.close()
    assert all(isinstance(o, NonceStoreUnavailable) for o in out)
    assert [_RUN(store.consume(n, SCOPE)) for n in nonces] == [Use.ACCEPTED] * 3


def test_redis_batched_consumes_answer_each_caller_and_survive_a_script_flush(redis_server) -> None:
    """Consumes of one loop turn go out as one pipeline: each caller still gets its own
    answer; after SCRIPT FLUSH (a restarted server) the script is loaded again."""
    import redis.asyncio as aioredis

    store = RedisNonceStore(redis_server.url, prefix="t:batched:")
    other = NonceScope("key-2", "chute-1", "inst-1")

    async def run() -> tuple[list[Use], list[Use]]:
        nonces = await store.issue(SCOPE, 20)
        admin = aioredis.from_url(redis_server.url)
        await admin.script_flush()
        await admin.aclose()
        calls = [store.consume(n, other) for n in nonces[:5]]  # refused first, not burned
        calls += [store.consume(n, SCOPE) for n in nonces for _ in range(2)]
        calls.append(store.consume("f" * 32, SCOPE))
        first = await asyncio.gather(*calls)
        again = await asyncio.gather(*(store.consume(n, SCOPE) for n in nonces))
        await store.aclose()
        return first, again

    first, again = _RUN(run())
    assert first[:5] == [Use.SCOPE] * 5
    pairs = [first[5 + 2 * i:7 + 2 * i] for i in range(20)]
    assert all(pair == [Use.ACCEPTED, Use.UNKNOWN] for pair in pairs)
    assert first[-1] is Use.UNKNOWN and set(again) == {Use.UNKNOWN}


def test_redis_down_answers_every_caller_of_a_batch_unavailable() -> None:
    from tests.servers import free_port

    store = RedisNonceStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)

    async def run() -> list[BaseException | Use]:
        return await asyncio.gather(*(store.consume(f"{i:032x}", SCOPE) for i in range(5)),
                                    return_exceptions=True)

    answers = _RUN(run())
    assert all(isinstance(a, NonceStoreUnavailable) for a in answers)
