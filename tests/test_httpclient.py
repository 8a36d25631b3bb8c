"""chutes_subnet.httpclient against real loopback servers: uvicorn for well-behaved
answers, a raw asyncio server for misbehaving ones (slowloris and oversized heads,
early close, broken chunked encoding, stale keep-alive), and hypothesis for the
response framing edges (any split of any well-formed response reads back exactly)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chutes_subnet.httpclient import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    READ_AHEAD_BYTES,
    HttpClient,
    HttpClientError,
)
from tests.servers import UvicornThread, free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# -- a well-behaved server (uvicorn) --------------------------------------------------
_stream_gate: dict[str, Any] = {}


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    client_port = str(scope["client"][1]).encode()
    path = scope["path"]
    if path == "/echo":  # Content-Length answer
        await send({"type": "http.response.start", "status": 201, "headers": [
            (b"content-length", str(len(body)).encode()), (b"x-client-port", client_port),
            (b"x-method", scope["method"].encode()),
            (b"x-got", dict(scope["headers"]).get(b"x-test", b"-"))]})
        await send({"type": "http.response.body", "body": body[::-1]})
    elif path == "/stream":  # chunked SSE, the second event only after the gate opens
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.to_thread(_stream_gate["event"].wait, 10)  # set from the test's thread
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(32):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/slow":
        await asyncio.sleep(2)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})
    elif path == "/stall":  # head and a first chunk, then silence
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(2)
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def uv() -> Iterator[UvicornThread]:
    with UvicornThread(_app) as server:
        yield server


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw asyncio server on loopback; yields (base URL, list of accepted connections)."""
    accepted: list[int] = []
    tasks: set[asyncio.Task[Any]] = set()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head + Content-Length body) as raw bytes."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


def answering(*replies: bytes, then_close: bool = True) -> Handler:
    """A handler answering successive requests on a connection with ``replies``."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            await read_request(reader)
            writer.write(reply)
            await writer.drain()
        if not then_close:
            await reader.read()
    return handler


async def fails(coro: Awaitable[Any]) -> HttpClientError:
    with pytest.raises(HttpClientError) as info:
        await coro
    return info.value


# -- well-behaved answers -------------------------------------------------------------
async def test_content_length_answer_headers_and_keep_alive(uv: UvicornThread) -> None:
    client = HttpClient()
    try:
        ports = set()
        for i in range(5):
            resp = await client.post(uv.url + "/echo", {"X-Test": f"v{i}"}, b"abc%d" % i)
            assert resp.status == 201
            assert resp.headers["X-Got"] == f"v{i}"  # sent; lookups ignore case
            assert resp.headers.get("x-method") == "POST"
            assert await resp.read_bounded(100) == b"%dcba" % i
            ports.add(resp.headers["x-client-port"])
            resp.release()
        assert len(ports) == 1  # one kept-alive connection served all five
        assert client.open_connections == 1
    finally:
        await client.aclose()


async def test_sse_chunks_arrive_before_the_answer_ends(uv: UvicornThread) -> None:
    _stream_gate["event"] = threading.Event()
    client = HttpClient()
    try:
        resp = await client.post(uv.url + "/stream", {}, b"")
        chunks = resp.iter_chunks()
        assert await anext(chunks) == b"data: 1\n\n"  # not buffered until the end
        _stream_gate["event"].set()
        assert b"".join([c async for c in chunks]) == b"data: 2\n\n"
        resp.release()
        assert client.open_connections == 1  # chunked body read to its end: reusable
    finally:
        await client.aclose()


async def test_reading_pauses_while_the_caller_lags(uv: UvicornThread) -> None:
    client = HttpClient()
    try:
        resp = await client.post(uv.url + "/big", {}, b"")
        total, most = 0, 0
        async for chunk in resp.iter_chunks():
            total += len(chunk)
            most = max(most, resp._conn.buffered if resp._conn else 0)  # type: ignore[attr-defined]
            await asyncio.sleep(0.001)
        resp.release()
        assert total == 32 * 65536
        assert most <= READ_AHEAD_BYTES + 256 * 1024  # read ahead, then one socket read
    finally:
        await client.aclose()


async def test_pool_bound_holds_under_concurrency(uv: UvicornThread) -> None:
    client = HttpClient(max_connections=2)
    peak = 0

    async def one(i: int) -> bytes:
        nonlocal peak
        resp = await client.post(uv.url + "/echo", {}, b"%03d" % i)
        peak = max(peak, client.open_connections)
        try:
            return await resp.read_bounded(10)
        finally:
            resp.release()

    try:
        out = await asyncio.gather(*(one(i) for i in range(20)))
        assert out == [(b"%03d" % i)[::-1] for i in range(20)]
        assert peak <= 2 and client.open_connections <= 2
    finally:
        await client.aclose()


async def test_read_bounded_stops_at_the_limit_and_drops_the_connection(
        uv: UvicornThread) -> None:
    client = HttpClient()
    try:
        resp = await client.post(uv.url + "/big", {}, b"")
        assert await resp.read_bounded(1000) == b"x" * 1000
        resp.release()
        assert client.open_connections == 0  # unread body: never reused
    finally:
        await client.aclose()


# -- timeouts and refusals ------------------------------------------------------------
async def test_connect_refused_is_before_response() -> None:
    client = HttpClient(connect_timeout=1)
    err = await fails(client.post(f"http://127.0.0.1:{free_port()}/x", {}, b""))
    assert (err.reason, err.before_response) == ("connect", True)
    await client.aclose()


async def test_silent_upstream_times_out_before_response(uv: UvicornThread) -> None:
    client = HttpClient(read_timeout=0.3)
    t0 = time.monotonic()
    err = await fails(client.post(uv.url + "/slow", {}, b""))
    assert (err.reason, err.before_response) == ("read_timeout", True)
    assert time.monotonic() - t0 < 1.5
    assert client.open_connections == 0
    await client.aclose()


async def test_stall_mid_body_times_out_after_response(uv: UvicornThread) -> None:
    client = HttpClient(read_timeout=0.3)
    resp = await client.post(uv.url + "/stall", {}, b"")
    chunks = resp.iter_chunks()
    assert await anext(chunks) == b"first"
    with pytest.raises(HttpClientError) as info:
        await anext(chunks)
    assert (info.value.reason, info.value.before_response) == ("read_timeout", False)
    resp.release()
    await client.aclose()


async def test_misuse_is_value_error() -> None:
    client = HttpClient()
    with pytest.raises(ValueError, match="CR or LF"):
        await client.post("http://127.0.0.1:1/x", {"X-A": "b\r\nX-Injected: 1"}, b"")
    with pytest.raises(ValueError, match="CR or LF"):
        await client.post("http://127.0.0.1:1/x", {"X-A\nB": "b"}, b"")
    with pytest.raises(ValueError, match="http://"):
        await client.post("https://127.0.0.1:1/x", {}, b"")
    with pytest.raises(ValueError, match="HEAD"):
        await client.request("HEAD", "http://127.0.0.1:1/x", {})
    assert client.open_connections == 0
    await client.aclose()


async def test_caller_cannot_override_framing_headers() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with raw_server(handler) as (url, _):
        client = HttpClient()
        resp = await client.post(url + "/p?q=1", {"Content-Length": "999", "Host": "evil",
                                                  "Transfer-Encoding": "chunked"}, b"abc")
        resp.release()
        await client.aclose()
    head = seen[0].split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"post /p?q=1 http/1.1\r\nhost: 127.0.0.1:")
    assert b"content-length: 3" in head and b"999" not in head
    assert b"evil" not in head and b"transfer-encoding" not in head
    assert seen[0].endswith(b"\r\n\r\nabc")


# -- misbehaving servers --------------------------------------------------------------
async def test_slowloris_head_fails_at_the_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(200):  # one header byte every 20 ms, never finishing
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(0.02)

    async with raw_server(handler) as (url, _):
        client = HttpClient(read_timeout=0.4)
        t0 = time.monotonic()
        err = await fails(client.post(url, {}, b""))
        assert (err.reason, err.before_response) == ("read_timeout", True)
        assert time.monotonic() - t0 < 1.5  # trickled bytes do not extend the deadline
        await client.aclose()


async def test_a_reused_connection_times_out_on_time_and_a_slow_stream_does_not() -> None:
    """Waits on one pooled connection each get their own deadline: a second request that
    is never answered fails at the read timeout (not later), and a body whose chunks
    come more often than the timeout is read whole however long it lasts."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # 1: a slow chunked body, 6 chunks 0.15 s apart
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):
            writer.write(b"2\r\nab\r\n")
            await writer.drain()
            await asyncio.sleep(0.15)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await read_request(reader)  # 2: never answered
        await asyncio.sleep(5)

    async with raw_server(handler) as (url, _):
        client = HttpClient(read_timeout=0.4)
        resp = await client.post(url, {}, b"")
        body = b"".join([chunk async for chunk in resp.iter_chunks()])
        resp.release()
        assert body == b"ab" * 6  # 0.9 s of body under a 0.4 s silence timeout
        t0 = time.monotonic()
        err = await fails(client.post(url, {}, b""))
        assert err.reason == "read_timeout" and 0.35 < time.monotonic() - t0 < 1.2
        await client.aclose()


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1))
    + b"Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Never-Ends: " + b"a" * (4 * MAX_HEAD_BYTES),
], ids=["one-huge-header", "too-many-headers", "unterminated-huge-head"])
async def test_oversized_heads_are_refused(head: bytes) -> None:
    async with raw_server(answering(head, then_close=False)) as (url, _):
        client = HttpClient(read_timeout=5)
        err = await fails(client.post(url, {}, b""))
        assert (err.reason, err.before_response) == ("head_too_large", True)
        assert client.open_connections == 0
        await client.aclose()


@pytest.mark.parametrize("reply,got", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", b"0123456789"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"hello"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", b"hel"),
], ids=["content-length", "chunked-no-last-chunk", "inside-a-chunk"])
async def test_early_close_mid_body(reply: bytes, got: bytes) -> None:
    async with raw_server(answering(reply)) as (url, _):
        client = HttpClient()
        resp = await client.post(url, {}, b"")
        assert resp.status == 200
        received = b""
        with pytest.raises(HttpClientError) as info:
            async for chunk in resp.iter_chunks():
                received += chunk
        assert (info.value.reason, info.value.before_response) == ("closed", False)
        assert received == got
        resp.release()
        assert client.open_connections == 0
        await client.aclose()


@pytest.mark.parametrize("body", [
    b"ZZ\r\nhello\r\n0\r\n\r\n",          # chunk size not hex
    b"5\r\nhelloXX0\r\n\r\n",              # chunk data longer than its size
    b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",  # size overflows 64 bits
], ids=["bad-size", "overlong-chunk", "size-overflow"])
async def test_chunked_encoding_errors(body: bytes) -> None:
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    async with raw_server(answering(reply, then_close=False)) as (url, _):
        client = HttpClient(read_timeout=2)
        resp = await client.post(url, {}, b"")
        with pytest.raises(HttpClientError) as info:
            await resp.read_bounded(1 << 20)
        assert info.value.reason == "protocol"
        assert info.value.before_response is False
        resp.release()
        await client.aclose()


async def test_garbage_status_line_is_a_protocol_error() -> None:
    async with raw_server(answering(b"SSH-2.0-OpenSSH\r\n\r\n", then_close=False)) as (url, _):
        client = HttpClient(read_timeout=2)
        err = await fails(client.post(url, {}, b""))
        assert (err.reason, err.before_response) == ("protocol", True)
        await client.aclose()


async def test_body_until_close_and_interim_answers() -> None:
    reply = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
             b"all of it")
    async with raw_server(answering(reply)) as (url, _):
        client = HttpClient()
        resp = await client.post(url, {}, b"q")
        assert resp.status == 200
        assert resp.headers["x-a"] == "1, 2"  # repeated fields joined, in order
        assert await resp.read_bounded(100) == b"all of it"
        resp.release()
        assert client.open_connections == 0  # closed-delimited: never reused
        await client.aclose()


async def _two_answers_on_two_connections(url: str, accepted: list[int]) -> None:
    """Two calls both answered ``ok``, the second on a new connection."""
    client = HttpClient()
    for _ in range(2):
        resp = await client.post(url, {}, b"")
        assert await resp.read_bounded(10) == b"ok"
        resp.release()
    assert len(accepted) == 2
    await client.aclose()


async def test_extra_bytes_after_an_answer_make_it_not_reusable() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(answering(ok + b"HTTP/1.1 200 OK\r\n", ok)) as (url, accepted):
        await _two_answers_on_two_connections(url, accepted)


async def test_stale_keep_alive_is_retried_once_on_a_new_connection() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok)
        await writer.drain()
        if len(accepted) == 1:
            await read_request(reader)  # the next request on this connection: dropped
            writer.transport.abort()
            return
        await read_request(reader)

    async with raw_server(handler) as (url, accepted):
        await _two_answers_on_two_connections(url, accepted)


async def test_fresh_connection_closed_without_answer_is_not_retried() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with raw_server(handler) as (url, accepted):
        client = HttpClient()
        err = await fails(client.post(url, {}, b""))
        assert (err.reason, err.before_response) == ("closed", True)
        assert len(accepted) == 1
        await client.aclose()


async def test_idle_connection_closed_by_the_server_is_not_reused() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(answering(ok)) as (url, accepted):
        client = HttpClient()
        for _ in range(2):
            resp = await client.post(url, {}, b"")
            assert await resp.read_bounded(10) == b"ok"
            resp.release()
            await asyncio.sleep(0.05)  # the server closes after one answer
        assert len(accepted) == 2
        await client.aclose()


async def test_aclose_fails_a_held_response() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    async with raw_server(answering(head, then_close=False)) as (url, _):
        client = HttpClient()
        resp = await client.post(url, {}, b"")
        await client.aclose()
        with pytest.raises(HttpClientError):
            await resp.read_bounded(100)
        resp.release()
        with pytest.raises(RuntimeError, match="closed"):
            await client.post(url, {}, b"")


# -- framing edges (hypothesis) -------------------------------------------------------
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e),
                 max_size=40)


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, int, dict[str, str], bytes, list[int]]:
    """(wire bytes, status, headers, body, split points) of a well-formed response."""
    status = draw(st.sampled_from([200, 201, 400, 404, 429, 500, 503]))
    names = draw(st.lists(_token.map(lambda t: "x-" + t), max_size=6, unique=True))
    headers = {n: draw(_value) for n in names}
    body = draw(st.binary(max_size=3000))
    chunked = draw(st.booleans())
    head = f"HTTP/1.1 {status} Whatever\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if chunked:
        sizes = draw(st.lists(st.integers(1, 700), max_size=8))
        parts, rest = [], body
        for n in sizes:
            if rest:
                parts.append(rest[:n])
                rest = rest[n:]
        if rest:
            parts.append(rest)
        wire = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"".join(
            b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    else:
        wire = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    splits = sorted(draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=6)))
    return wire, status, headers, body, splits


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(resp=responses())
def test_any_split_of_a_response_reads_back_exactly(
        loop: asyncio.AbstractEventLoop,
        resp: tuple[bytes, int, dict[str, str], bytes, list[int]]) -> None:
    wire, status, headers, body, splits = resp

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):  # the same answer twice, on one kept-alive connection
            await read_request(reader)
            start = 0
            for end in [*splits, len(wire)]:
                writer.write(wire[start:end])
                await writer.drain()
                start = end
        await reader.read()

    async def run() -> None:
        async with raw_server(handler) as (url, accepted):
            client = HttpClient(read_timeout=5)
            for _ in range(2):
                r = await client.post(url, {"X-Req": "1"}, b"req")
                assert r.status == status
                for k, v in headers.items():
                    assert r.headers[k.upper()] == v
                assert b"".join([c async for c in r.iter_chunks()]) == body
                r.release()
            assert len(accepted) == 1
            await client.aclose()

    loop.run_until_complete(run())


async def test_cancelled_waiters_do_not_leak_slots(uv: UvicornThread) -> None:
    """Requests cancelled while waiting for a connection slot leave the bound intact."""
    client = HttpClient(max_connections=1)
    try:
        held = await client.post(uv.url + "/echo", {}, b"held")
        waiting = [asyncio.ensure_future(client.post(uv.url + "/echo", {}, b"w"))
                   for _ in range(5)]
        await asyncio.sleep(0.05)
        for task in waiting[:3]:
            task.cancel()
        held.release()
        for task in waiting[3:]:
            resp = await task
            assert await resp.read_bounded(10) == b"w"
            resp.release()
        assert all(t.cancelled() for t in waiting[:3])
        resp = await client.post(uv.url + "/echo", {}, b"after")
        assert await resp.read_bounded(10) == b"retfa"
        resp.release()
        assert client.open_connections == 1
    finally:
        await client.aclose()
