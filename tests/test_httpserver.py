"""Bounded request heads on the project's uvicorn settings (httptools kept for speed)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from fastapi import FastAPI, Request

from chutes_subnet.httpserver import MAX_REQUEST_HEAD_BYTES, server_options
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
