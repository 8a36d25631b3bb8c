"""Unit tests of the gateway's pure parts and stores: keys, usage, registry, limits,
balancer, and the streaming usage sniffer (property-based)."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet import receipts
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.errors import AuthenticationError, UsageError
from chutes_subnet.gateway import app as gateway_app
from chutes_subnet.gateway.api_keys import (
    KEY_PREFIX,
    MemoryApiKeyStore,
    SQLiteApiKeyStore,
    hash_key,
    parse_bearer,
)
from chutes_subnet.gateway.balancer import LoadBalancer
from chutes_subnet.gateway.ratelimit import RateLimiter
from chutes_subnet.gateway.usage import SQLiteUsageMeter
from chutes_subnet.registry import (
    InstanceRecord,
    MemoryInstanceRegistry,
    SQLiteInstanceRegistry,
)
from chutes_subnet.wire.headers import parse_usage_header

#: one key per test instance name; each record's id is derived from its key
_KEYS: dict[str, KeyPair] = {}


def iid(name: str) -> str:
    return _KEYS.setdefault(name, KeyPair.generate()).instance_id


def rec(name: str, chute: str = "c1", *, expires: float = 100.0, score: float = 1.0,
        model: str = "m1") -> InstanceRecord:
    kp = _KEYS.setdefault(name, KeyPair.generate())
    return InstanceRecord(instance_id=kp.instance_id, chute_id=chute, model=model,
                          url="http://x", hotkey="hk", uid=0, e2e_pubkey=kp.public_b64,
                          verified_at=0.0, expires_at=expires, score=score)


def test_public_api_lists() -> None:
    assert gateway_app.__all__ == ["create_app"]


@pytest.mark.parametrize("registry_kind", ["memory", "sqlite"])
def test_registry_hides_expired_and_filters_by_chute(tmp_path: Path, registry_kind: str) -> None:
    reg = MemoryInstanceRegistry() if registry_kind == "memory" else \
        SQLiteInstanceRegistry(tmp_path / "r.db", cache_seconds=0)
    reg.upsert(rec("a", expires=100))
    reg.upsert(rec("b", expires=50))
    reg.upsert(rec("c", chute="c2", model="m2", expires=100))
    assert {r.instance_id for r in reg.list_verified(now=60)} == {iid("a"), iid("c")}
    assert [r.instance_id for r in reg.list_verified("c1", now=60)] == [iid("a")]
    assert reg.models(now=60) == [("m1", "c1"), ("m2", "c2")]
    assert reg.models(now=200) == []
    assert reg.remove("hk", iid("a"))
    assert [r.instance_id for r in reg.list_verified("c1", now=10)] == [iid("b")]


def test_sqlite_registry_is_shared_between_processes_views(tmp_path: Path) -> None:
    writer = SQLiteInstanceRegistry(tmp_path / "r.db")
    reader = SQLiteInstanceRegistry(tmp_path / "r.db", cache_seconds=0)
    kp = KeyPair.generate()
    r = InstanceRecord(kp.instance_id, "c1", "m1", "http://1.2.3.4:8000", "hk", 7, kp.public_b64,
                       (2,), 1.0, 99.0, 0.7, True)
    writer.upsert(r)
    assert reader.list_verified(now=50) == [r]  # round-trips every field incl. the tuple


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


def test_usage_batches_and_persists_across_instances(tmp_path: Path) -> None:
    a, b = SQLiteUsageMeter(tmp_path / "u.db"), SQLiteUsageMeter(tmp_path / "u.db")
    a.record("k", 10, 5)
    a.record("k", 1, -7)  # negative counts from a miner are clamped
    assert a.totals("k").total_tokens == 16 and b.totals("k").requests == 0
    a.flush()
    b.record("k", 2, 2)
    b.flush()
    assert b.totals("k").requests == 3 and b.totals("k").total_tokens == 20
    a.close()
    assert SQLiteUsageMeter(tmp_path / "u.db").totals("k").prompt_tokens == 13


def test_rate_limiter_refills_over_time() -> None:
    t = [0.0]
    lim = RateLimiter(clock=lambda: t[0])
    assert [lim.check("k", 2.0, 2).allowed for _ in range(3)] == [True, True, False]
    d = lim.check("k", 2.0, 2)
    assert not d.allowed and d.retry_after == pytest.approx(0.5)
    t[0] = 0.5
    assert lim.check("k", 2.0, 2).allowed
    assert lim.check("other", None).allowed


def test_balancer_prefers_score_and_idle_and_benches_failures() -> None:
    import random

    t = [0.0]
    lb = LoadBalancer(cooldown=5, rng=random.Random(1), clock=lambda: t[0])
    good, poor = rec("good", score=1.0), rec("poor", score=0.01)
    firsts = [lb.rank([good, poor], 2)[0].instance_id for _ in range(400)]
    assert firsts.count(iid("good")) > 300
    for _ in range(50):
        lb.acquire(iid("good"))
    firsts = [lb.rank([good, poor], 2)[0].instance_id for _ in range(400)]
    assert firsts.count(iid("poor")) > 200  # the busy instance yields to the idle one
    lb.mark_failed(iid("poor"))
    assert [r.instance_id for r in lb.rank([good, poor], 2)] == [iid("good")]
    assert [r.instance_id for r in lb.rank([poor], 2)] == [iid("poor")]  # nothing else left
    t[0] = 6
    assert len(lb.rank([good, poor], 2)) == 2


def test_usage_header_parsing() -> None:
    assert parse_usage_header('{"prompt_tokens": 4, "completion_tokens": 9}') == (4, 9)
    assert parse_usage_header(None) is None
    for bad in ("", "nope", '{"prompt_tokens": -1}', '{"prompt_tokens": true}',
                "[1]", "{" * 5000, '{"completion_tokens": 1e999}',
                '{"completion_tokens": 1099511627777}', '{"prompt_tokens": 4.0}',
                '{"completion_tokens": "9"}', "{\"\u00e9\u4e2d\": 1"):
        with pytest.raises(UsageError):
            parse_usage_header(bad)


_events = st.lists(st.one_of(
    st.binary(min_size=0, max_size=300).map(
        lambda b: b"data: " + json.dumps({"e2e": b.hex()}).encode()),
    st.just(b"data: [DONE]"),
    st.text(max_size=40).map(lambda s: b": " + s.encode("utf-8", "replace").replace(b"\n", b"")),
), max_size=12)


@settings(max_examples=200, deadline=None)
@given(before=_events, after=_events, cuts=st.lists(st.integers(1, 64), max_size=30))
def test_receipt_tap_finds_the_receipt_however_the_stream_is_cut(
        before: list[bytes], after: list[bytes], cuts: list[int]) -> None:
    answer = b"".join(e + b"\n\n" for e in before)
    wire = "QUJD" * 40  # shape only: the tap extracts, verify() judges
    stream = answer + receipts.event(wire) + b"".join(e + b"\n\n" for e in after)
    tap, pos = receipts.ReceiptTap(), 0
    for n in cuts:
        tap.feed(stream[pos:pos + n])
        pos += n
    tap.feed(stream[pos:])
    tap.close()
    assert tap.receipt == wire
    assert tap.answer_sha256 == hashlib.sha256(answer).digest()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=20000))
def test_receipt_tap_never_invents_a_receipt_and_stays_bounded(blob: bytes) -> None:
    tap = receipts.ReceiptTap()
    for i in range(0, len(blob), 997):
        tap.feed(blob[i:i + 997])
        assert len(tap._partial) <= receipts.ReceiptTap._MAX_LINE
    assert tap.receipt is None or receipts.EVENT_PREFIX in blob


_EVENTS = [b'data: {"e2e": "AAAA"}\n\n', b'data: {"e2e": "BBBBBBBB"}\n\n',
           b'data: {"e2e": "CC"}\n\n', b'data: {"e2e_final": "DDDD"}\n\n', b"data: [DONE]\n\n"]
_INTERRUPTED = b'data: {"e2e_error": "upstream interrupted"}\n\n'


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, sum(map(len, _EVENTS))), max_size=8),
       killed_at=st.integers(0, sum(map(len, _EVENTS))))
def test_interrupted_stream_relays_whole_events_then_the_gateway_error(cuts, killed_at):
    """A miner killed mid-event (at any byte, with any read boundaries) leaves the client
    whole events followed by the gateway's ``e2e_error``: never a half event glued to it,
    which a v2 client would reject as tampering instead of reporting the interruption."""
    from chutes_subnet.gateway.invoke import _TailHold
    from chutes_subnet.sse import SSEParser

    body = b"".join(_EVENTS)[:killed_at]
    bounds = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    hold, relayed = _TailHold(True), b""
    for a, b in itertools.pairwise(bounds):
        relayed += hold.push(body[a:b])
    hold.append(_INTERRUPTED)
    relayed += hold.rest()
    parser = SSEParser()
    events = [*parser.feed(relayed), *parser.close()]
    assert events[-1] == '{"e2e_error": "upstream interrupted"}'
    whole = [e for e in _EVENTS if body.find(e) >= 0 and body.find(e) + len(e) <= len(body)]
    assert relayed == b"".join(whole) + _INTERRUPTED
