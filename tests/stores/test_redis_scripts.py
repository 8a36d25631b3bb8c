"""The lean Redis script client: real redis-server behaviour, failures, bounded replies."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.stores.redis_scripts import (
    RedisAddress,
    RedisLinkError,
    RedisReplyError,
    ScriptClient,
    _Incomplete,
    _parse,
    pack_command,
)

_ECHO = "return {tonumber(ARGV[1]) + 1, ARGV[2]}"
_FAIL = "return redis.error_reply('nope ' .. ARGV[1])"


def test_address_parsing_and_what_is_left_to_redis_py() -> None:
    addr = RedisAddress.parse("redis://user:p%40ss@10.0.0.5:6380/3")
    assert addr == RedisAddress("10.0.0.5", 6380, 3, "user", "p@ss")
    assert "p@ss" not in repr(addr) and "10.0.0.5:6380/3" in repr(addr)
    assert RedisAddress.parse("redis://h") == RedisAddress("h", 6379, 0, None, None)
    assert RedisAddress.parse("rediss://h:6380/0") is None  # TLS: redis-py
    assert RedisAddress.parse("unix:///run/redis.sock") is None
    for bad in ("redis:///0", "redis://h/x", "redis://h/99999999"):
        with pytest.raises(ValueError):
            RedisAddress.parse(bad)


def test_scripts_run_pipelined_on_a_real_server_and_survive_a_script_flush(redis_server) -> None:
    import redis

    client = ScriptClient(RedisAddress.parse(redis_server.url), timeout=2.0)

    async def run() -> tuple[list[object], object]:
        out = await asyncio.gather(*(client.evalsha(_ECHO, [], [str(i), f"v{i}"])
                                     for i in range(200)))
        redis.Redis.from_url(redis_server.url).script_flush()  # a restarted server
        again = await client.evalsha(_ECHO, [], ["41", "x"])
        await client.aclose()
        return list(out), again

    out, again = asyncio.run(run())
    assert out == [[i + 1, f"v{i}".encode()] for i in range(200)]  # each caller its own reply
    assert again == [42, b"x"]


def test_an_error_reply_is_raised_to_its_caller_only(redis_server) -> None:
    client = ScriptClient(RedisAddress.parse(redis_server.url))

    async def run() -> list[object]:
        out = await asyncio.gather(client.evalsha(_ECHO, [], ["1", "a"]),
                                   client.evalsha(_FAIL, [], ["boom"]),
                                   client.evalsha(_ECHO, [], ["2", "b"]), return_exceptions=True)
        await client.aclose()
        return out

    first, failed, last = asyncio.run(run())
    assert first == [2, b"a"] and last == [3, b"b"]
    assert isinstance(failed, RedisReplyError) and "nope boom" in str(failed)


def test_auth_and_database_selection(redis_server) -> None:
    import redis

    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("requirepass", "s3cret")
    try:
        good = ScriptClient(RedisAddress.parse(f"redis://:s3cret@127.0.0.1:{redis_server.port}/5"))
        wrong = ScriptClient(RedisAddress.parse(f"redis://:nope@127.0.0.1:{redis_server.port}/0"))
        none = ScriptClient(RedisAddress.parse(f"redis://127.0.0.1:{redis_server.port}/0"))
        put = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"

        async def run() -> tuple[object, BaseException | None, BaseException | None]:
            value = await good.evalsha(put, ["lean:k"], ["in-db-5"])
            errors: list[BaseException | None] = []
            for client in (wrong, none):
                try:
                    await client.evalsha(_ECHO, [], ["1", "a"])
                    errors.append(None)
                except (RedisLinkError, RedisReplyError) as exc:
                    errors.append(exc)
            for client in (good, wrong, none):
                await client.aclose()
            return value, errors[0], errors[1]

        value, wrong_err, none_err = asyncio.run(run())
        assert value == b"in-db-5"
        assert isinstance(wrong_err, RedisLinkError) and "s3cret" not in str(wrong_err)
        assert isinstance(none_err, RedisReplyError) and "NOAUTH" in str(none_err)
        admin5 = redis.Redis(port=redis_server.port, db=5, password="s3cret")
        assert admin5.get("lean:k") == b"in-db-5"
        assert redis.Redis(port=redis_server.port, db=0, password="s3cret").get("lean:k") is None
    finally:
        redis.Redis(port=redis_server.port, password="s3cret").config_set("requirepass", "")


@contextlib.contextmanager
def _fake_server(answer: bytes | None) -> Iterator[int]:
    """A TCP server that reads a command and answers ``answer`` (None: never answers)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conns.append(conn)
            with contextlib.suppress(OSError):
                conn.recv(65536)
                if answer is not None:
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in conns:
            conn.close()
        listener.close()


def test_a_silent_server_fails_the_call_at_its_deadline_and_the_next_call_reconnects() -> None:
    with _fake_server(None) as port:
        client = ScriptClient(RedisAddress.parse(f"redis://127.0.0.1:{port}/0"), timeout=0.3)

        async def run() -> tuple[list[object], float]:
            t0 = time.monotonic()
            first = await asyncio.gather(*(client.evalsha(_ECHO, [], ["1", "a"]) for _ in range(3)),
                                         return_exceptions=True)
            elapsed = time.monotonic() - t0
            second = await asyncio.gather(client.evalsha(_ECHO, [], ["1", "a"]),
                                          return_exceptions=True)
            await client.aclose()
            return first + second, elapsed

        results, elapsed = asyncio.run(run())
    assert all(isinstance(r, RedisLinkError) and "timed out" in str(r) for r in results)
    assert 0.25 <= elapsed < 2.0


@pytest.mark.parametrize("answer, reason", [
    (b"$99999999\r\n", "too large"),  # a bulk reply past the bound
    (b"*100000\r\n", "too large"),
    (b"+" + b"x" * 10_000, "too long"),  # a line with no end in sight
    (b"?what\r\n", "unknown type"),
    (b":12x\r\n", "integer malformed"),
    (b":1\r\n:2\r\n", "nobody asked"),  # two replies for one call
])
def test_a_misbehaving_server_breaks_the_connection_not_the_caller(answer: bytes,
                                                                    reason: str) -> None:
    with _fake_server(answer) as port:
        client = ScriptClient(RedisAddress.parse(f"redis://127.0.0.1:{port}/0"), timeout=1.0)

        async def run() -> object:
            try:
                return await client.evalsha(_ECHO, [], ["1", "a"])
            except RedisLinkError as exc:
                return exc
            finally:
                await client.aclose()

        out = asyncio.run(run())
    if reason == "nobody asked":  # the first reply answered the call; the extra one is refused
        assert out == 1
    else:
        assert isinstance(out, RedisLinkError) and reason in str(out)


def test_a_refused_connection_is_a_link_error() -> None:
    from tests.servers import free_port

    client = ScriptClient(RedisAddress.parse(f"redis://127.0.0.1:{free_port()}/0"), timeout=0.5)
    with pytest.raises(RedisLinkError, match="connect failed"):
        asyncio.run(client.evalsha(_ECHO, [], ["1", "a"]))


_scalar = st.one_of(st.integers(-(2**63), 2**63 - 1), st.binary(max_size=64), st.none())


def _encode(value: object) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    items = list(value)  # type: ignore[call-overload]
    return b"*%d\r\n" % len(items) + b"".join(_encode(i) for i in items)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_scalar, st.lists(_scalar, max_size=8)), min_size=1, max_size=6),
       st.integers(1, 40))
def test_parse_round_trips_replies_split_anywhere(values: list[object], cut: int) -> None:
    """Replies cut at any byte parse as 'incomplete' until whole, then exactly."""
    wire = b"".join(_encode(v) for v in values)
    got, pos = [], 0
    for end in range(cut, len(wire) + cut, cut):
        chunk = wire[:min(end, len(wire))]
        while True:
            try:
                value, nxt = _parse(chunk, pos)
            except _Incomplete:
                break
            got.append(value)
            pos = nxt
    assert got == values and pos == len(wire)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_parse_never_fails_otherwise_on_arbitrary_bytes(data: bytes) -> None:
    try:
        _parse(data, 0)
    except (_Incomplete, RedisLinkError):
        pass


def test_pack_command_is_resp() -> None:
    assert pack_command(b"EVALSHA", "ab", 1, "k") == \
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n"


def test_answered_calls_never_trip_the_deadline_however_long_the_connection_lives(redis_server) -> None:
    """One watchdog per connection follows the oldest waiting call: calls answered in
    time over many deadlines' worth of wall time all succeed."""
    client = ScriptClient(RedisAddress.parse(redis_server.url), timeout=0.2)

    async def run() -> list[object]:
        out = []
        for i in range(12):  # 1.2 s of calls on one connection with a 0.2 s deadline
            out.append(await client.evalsha(_ECHO, [], [str(i), "x"]))
            await asyncio.sleep(0.1)
        await client.aclose()
        return out

    assert [r[0] for r in asyncio.run(run())] == list(range(1, 13))  # type: ignore[index]
