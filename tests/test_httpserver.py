"""The project's uvicorn settings: bounded request heads (httptools kept for speed),
coalesced writes, and the light request cycle of an app's fast path (a toy app serves
one route both ways: through ASGI routing it answers ``via: asgi``, as its fast path
``via: fast``, so each test sees which cycle answered and checks the wire bytes)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from fastapi import FastAPI, Request

from chutes_subnet.asgi import read_body
from chutes_subnet.httpserver import MAX_REQUEST_HEAD_BYTES, FastPath, server_options
from tests.servers import UvicornThread


@pytest.fixture(scope="module")
def server():
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"body": len(await request.body()), "headers": len(request.headers)}

    with UvicornThread(app, **server_options()) as s:
        yield s


def _exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b'"body"' in b"".join(chunks):
                break
        return b"".join(chunks)


def _request(headers_size: int, body: bytes = b"x", *, pipeline: int = 1) -> bytes:
    pad = b"p" * headers_size
    one = (b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Pad: " + pad + b"\r\nContent-Length: "
           + str(len(body)).encode() + b"\r\n\r\n" + body)
    return one * pipeline


def test_head_under_the_bound_is_served(server):
    answer = _exchange(server.port, _request(MAX_REQUEST_HEAD_BYTES - 4096))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]


def test_head_over_the_bound_is_refused(server):
    answer = _exchange(server.port, _request(4 * MAX_REQUEST_HEAD_BYTES))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]


def test_large_body_sent_with_its_head_is_not_mistaken_for_a_large_head(server):
    body = b"b" * (3 * MAX_REQUEST_HEAD_BYTES)
    answer = _exchange(server.port, _request(100, body))
    assert answer.startswith(b"HTTP/1.1 200") and b'"body":%d' % len(body) in answer


def test_pipelined_requests_each_get_a_fresh_allowance(server):
    answer = _exchange(server.port, _request(MAX_REQUEST_HEAD_BYTES // 2, pipeline=3))
    assert answer.count(b"HTTP/1.1 200") >= 1 and b"HTTP/1.1 400" not in answer


def test_trickled_head_is_cut_after_the_head_timeout(server, monkeypatch):
    import time

    from chutes_subnet.httpserver import BoundedHttpToolsProtocol

    monkeypatch.setattr(BoundedHttpToolsProtocol, "head_timeout", 0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\n")
        started = time.monotonic()
        answer = b""
        for _ in range(40):  # one header byte every 0.1 s: never completes
            try:
                sock.sendall(b"X")
            except OSError:
                break
            sock.settimeout(0.1)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            answer += data
        assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
        assert time.monotonic() - started < 3


def test_idle_keep_alive_connection_is_not_cut_by_the_head_timer(server, monkeypatch):
    import time

    from chutes_subnet.httpserver import BoundedHttpToolsProtocol

    monkeypatch.setattr(BoundedHttpToolsProtocol, "head_timeout", 0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_request(10))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(0.6)  # idle between requests: the keep-alive timeout (30 s) governs
        sock.sendall(_request(10))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


class _RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7


def test_coalescing_transport_sends_one_turns_writes_as_one_in_order() -> None:
    from chutes_subnet.httpserver import CoalescingTransport

    async def go() -> _RecordingTransport:
        raw = _RecordingTransport()
        t = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"body")
        assert raw.writes == [] and t.get_write_buffer_size() == 7  # the rest is delegated
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        t.writelines([b"la", b"st"])  # joins the same turn's writes, in order
        t.close()  # what was gathered goes out before the close
        assert raw.writes[-1] == b"last" and raw.closed
        await asyncio.sleep(0)
        return raw

    assert len(asyncio.run(go()).writes) == 2


# -- the fast path ---------------------------------------------------------------------

_MAX_BODY = 4096


async def _fast(scope: dict[str, Any], receive: Any, send: Any) -> None:
    msg = await receive()
    body = msg["body"]
    if body == b"raise-before":
        raise RuntimeError("boom")
    if body == b"inject":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-a", b"1\r\nx-injected: yes")]})
        await send({"type": "http.response.body", "body": b"no"})
        return
    if body == b"raise-after":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"10")]})
        raise RuntimeError("boom after start")
    if body == b"chunked":
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd"})
        return
    if body == b"slow":
        await asyncio.sleep(0.3)
    out = json.dumps({"via": "fast", "len": len(body), "method": scope["method"],
                      "path": scope["path"],
                      "tag": dict(scope["headers"]).get(b"x-tag", b"").decode()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


class _App:
    """ASGI app: ``/route`` answers ``via: asgi``; its fast path answers ``via: fast``."""

    def __init__(self) -> None:
        self.fast_path = FastPath(b"POST", b"/route", _fast,
                                  lambda h: h.get(b"x-skip") != b"1", max_body=_MAX_BODY)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive, 1 << 20)
        out = json.dumps({"via": "asgi", "len": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})


@pytest.fixture(scope="module")
def fast_server():
    """A server for :class:`_App` (its fast path: ``POST /route``)."""
    with UvicornThread(_App()) as s:
        yield s


def _post(body: bytes, *extra: bytes, version: bytes = b"1.1") -> bytes:
    head = [b"POST /route HTTP/" + version, b"Host: t", *extra]
    if not any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in extra):
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _read_responses(sock: socket.socket, count: int, timeout: float = 5.0) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """``count`` responses: (status line, headers, body), parsed strictly."""
    sock.settimeout(timeout)
    buf, out = b"", []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed after {len(out)} responses: {buf[:200]!r}")
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, value = line.split(b": ", 1)
            assert name not in headers, f"repeated header {name!r}"
            headers[name.lower()] = value
        if b"content-length" in headers:
            size = int(headers[b"content-length"])
            while len(buf) < size:
                buf += sock.recv(65536)
            body, buf = buf[:size], buf[size:]
        else:
            assert headers.get(b"transfer-encoding") == b"chunked"
            body = b""
            while True:
                while b"\r\n" not in buf:
                    buf += sock.recv(65536)
                size_line, buf = buf.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(buf) < size + 2:
                    buf += sock.recv(65536)
                body, buf = body + buf[:size], buf[size + 2:]
                if size == 0:
                    break
        out.append((status, headers, body))
    return out


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def test_a_plain_request_takes_the_fast_path_and_keeps_the_connection(fast_server) -> None:
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        for i in range(3):  # keep-alive: one socket, several exchanges
            sock.sendall(_post(b"x" * (100 + i), b"X-Tag: t%d" % i))
            [(status, headers, body)] = _read_responses(sock, 1)
            assert status == b"HTTP/1.1 200 OK"
            assert headers[b"content-type"] == b"application/json" and b"date" in headers
            assert json.loads(body) == {"via": "fast", "len": 100 + i, "method": "POST",
                                        "path": "/route", "tag": f"t{i}"}


@pytest.mark.parametrize("request_bytes", [
    _post(b"x" * (_MAX_BODY + 1)),                                     # over max_body
    _post(b"", b"Transfer-Encoding: chunked") + b"3\r\nabc\r\n0\r\n\r\n",  # no length
    _post(b"abc", b"X-Skip: 1"),                                       # accepts() said no
    _post(b"abc", version=b"1.0"),                                     # not HTTP/1.1
    _post(b"abc", b"Connection: close"),                               # not keep-alive
    b"POST /route?q=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",  # another target
    b"PUT /route HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",  # another method
], ids=["too-large", "chunked", "refused", "http10", "close", "query", "method"])
def test_other_requests_take_uvicorns_path(fast_server, request_bytes: bytes) -> None:
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        sock.sendall(request_bytes)
        [(status, _, body)] = _read_responses(sock, 1)
    assert status == b"HTTP/1.1 200 OK" and json.loads(body)["via"] == "asgi"


@pytest.mark.parametrize("request_bytes", [
    _post(b"abc", b"Content-Length: 3", b"Content-Length: 4"),  # two lengths
    _post(b"abc", b"Content-Length: 3", b"Content-Length: 3"),  # the same length twice
    _post(b"", b"Content-Length: 3", b"Transfer-Encoding: chunked") + b"0\r\n\r\n",
], ids=["two-lengths", "repeated-length", "length-and-chunked"])
def test_ambiguous_framing_is_refused_before_any_path(fast_server, request_bytes: bytes) -> None:
    """Request smuggling shapes never reach an app: the parser answers 400 and closes."""
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        sock.sendall(request_bytes)
        [(status, _, _)] = _read_responses(sock, 1)
        assert status.startswith(b"HTTP/1.1 400") and _closed(sock)


def test_expect_100_continue_takes_uvicorns_path(fast_server) -> None:
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        sock.sendall(_post(b"", b"Expect: 100-continue", b"Content-Length: 3"))
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100")
        sock.sendall(b"abc")
        [(_, _, body)] = _read_responses(sock, 1)
    assert json.loads(body) == {"via": "asgi", "len": 3}


def test_pipelined_requests_are_answered_in_order(fast_server) -> None:
    """A slow fast-path request with three more sent behind it at once: the ones behind
    queue on uvicorn's path and the answers come back in request order."""
    burst = (_post(b"slow", b"X-Tag: 1") + _post(b"a" * 11) + _post(b"abc", b"X-Skip: 1")
             + _post(b"d" * 7))
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        sock.sendall(burst)
        answers = [json.loads(body) for _, _, body in _read_responses(sock, 4)]
        sock.sendall(_post(b"e" * 5))  # the connection is free again: fast path
        after = json.loads(_read_responses(sock, 1)[0][2])
    assert [(a["via"], a["len"]) for a in answers] == \
        [("fast", 4), ("asgi", 11), ("asgi", 3), ("asgi", 7)]
    assert (after["via"], after["len"]) == ("fast", 5)


def test_a_body_arriving_in_pieces_is_delivered_whole(fast_server) -> None:
    body = b"y" * 3000
    raw = _post(body)
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head_end = raw.index(b"\r\n\r\n") + 4
        sock.sendall(raw[:head_end])
        for i in range(head_end, len(raw), 700):
            time.sleep(0.02)
            sock.sendall(raw[i:i + 700])
        [(_, _, answer)] = _read_responses(sock, 1)
    assert json.loads(answer)["via"] == "fast" and json.loads(answer)["len"] == 3000


def test_a_response_without_length_is_chunked(fast_server) -> None:
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        sock.sendall(_post(b"chunked"))
        [(status, _, body)] = _read_responses(sock, 1)
        assert status == b"HTTP/1.1 201 Created" and body == b"abcd"
        sock.sendall(_post(b"again"))  # the connection is still good
        assert json.loads(_read_responses(sock, 1)[0][2])["via"] == "fast"


def test_an_app_failing_before_answering_gets_a_500_and_the_connection_closes(fast_server) -> None:
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        sock.sendall(_post(b"raise-before"))
        [(status, headers, body)] = _read_responses(sock, 1)
        assert status == b"HTTP/1.1 500 Internal Server Error"
        assert body == b"Internal Server Error" and headers[b"connection"] == b"close"
        assert _closed(sock)


@pytest.mark.parametrize("body", [b"raise-after", b"inject"])
def test_a_broken_answer_closes_the_connection_without_a_forged_header(fast_server, body) -> None:
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        sock.sendall(_post(body))
        sock.settimeout(5)
        received = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    assert b"x-injected" not in received.lower()
    assert not received.startswith(b"HTTP/1.1 200") or body == b"raise-after"


def test_a_client_leaving_mid_request_leaves_the_server_serving(fast_server) -> None:
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        sock.sendall(_post(b"slow"))  # answered after 0.3 s, to nobody
    with socket.create_connection(("127.0.0.1", fast_server.port)) as sock:
        sock.sendall(_post(b"ok"))
        assert json.loads(_read_responses(sock, 1)[0][2])["via"] == "fast"
