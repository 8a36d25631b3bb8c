"""The four single-use stores consume the same way (chutes_subnet.single_use)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from chutes_subnet.attestation.verify.challenges import ChallengeBook
from chutes_subnet.auth import BoundedNonceStore
from chutes_subnet.nonces import MemoryNonceStore, NonceScope, SeenNonceCache, SQLiteNonceStore
from chutes_subnet.single_use import Use

SCOPE = NonceScope("key", "chute", "inst")


def _challenge_book() -> tuple[Callable[[Any], Use], Callable[[], Any]]:
    book = ChallengeBook()
    return book.consume, book.issue


def _seen_cache() -> tuple[Callable[[Any], Use], Callable[[], Any]]:
    cache, n = SeenNonceCache(ttl=60), iter(range(10**6))
    return cache.consume, lambda: f"n:{next(n)}"


def _btauth() -> tuple[Callable[[Any], Use], Callable[[], Any]]:
    store, n = BoundedNonceStore(retention=60), iter(range(10**6))
    return store.consume, lambda: ("5Hot", next(n))


def _invoke_nonces(path: str | None) -> Callable[[], tuple[Callable[[Any], Use], Callable[[], Any]]]:
    def make() -> tuple[Callable[[Any], Use], Callable[[], Any]]:
        store = MemoryNonceStore() if path is None else SQLiteNonceStore(path)

        def consume(nonce: str) -> Use:
            return asyncio.run(store.consume(nonce, SCOPE))

        return consume, lambda: asyncio.run(store.issue(SCOPE, 1))[0]

    return make


STORES = {"challenge_book": _challenge_book, "miner_replay_cache": _seen_cache,
          "btauth_replay_cache": _btauth, "invoke_nonces_memory": _invoke_nonces(None)}


@pytest.fixture(params=[*STORES, "invoke_nonces_sqlite"])
def store(request, tmp_path):
    if request.param == "invoke_nonces_sqlite":
        return _invoke_nonces(str(tmp_path / "n.db"))()
    return STORES[request.param]()


def test_accepted_exactly_once_then_a_reason(store) -> None:
    consume, fresh = store
    token = fresh()
    assert consume(token) is Use.ACCEPTED
    again = consume(token)
    assert isinstance(again, Use) and not again.ok and again in (Use.UNKNOWN, Use.USED)


def test_one_winner_among_concurrent_consumers(store) -> None:
    consume, fresh = store
    token = fresh()
    outcomes: list[Use] = []
    threads = [threading.Thread(target=lambda: outcomes.append(consume(token)))
               for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(Use.ACCEPTED) == 1 and len(outcomes) == 12


def test_an_outcome_is_not_a_bool() -> None:
    # every enum member is truthy: `if store.consume(t):` would accept replays
    with pytest.raises(TypeError):
        bool(Use.USED)
    assert Use.ACCEPTED.ok and not any(u.ok for u in Use if u is not Use.ACCEPTED)
