"""uvicorn settings shared by every server of the project, with bounded request heads.

uvicorn's fast ``httptools`` parser puts no bound on the request line and headers:
a peer can stream megabytes of header before the application sees anything. The
``h11`` parser can be bounded but is markedly slower on the gateway's hot path. So
the project runs httptools through :class:`BoundedHttpToolsProtocol`, which counts
the bytes a connection delivers while a request head is still incomplete and answers
400 (then closes) once they pass :data:`MAX_REQUEST_HEAD_BYTES`, or when a head that has
started does not complete within :data:`REQUEST_HEAD_TIMEOUT` seconds (a slowloris
client trickling header bytes would otherwise hold the connection for ever: uvicorn's
keep-alive timer stops at the first byte). A legitimate head (method, path, a few
dozen headers, btauth/1 signatures) is a few KiB and arrives in one read.

uvicorn writes a response's head and its body with two ``write`` calls, which on an
idle socket are two syscalls and two TCP segments. :class:`CoalescingTransport` gathers
the writes made in one event-loop turn and sends them as one (the head with the body
of a buffered answer, consecutive chunks of a stream): about a tenth of the gateway's
CPU per relayed request. Order is kept, and ``close`` sends what is gathered first.

An application may name one :class:`FastPath` (its ``fast_path`` attribute; the gateway
names ``POST /e2e/invoke`` without streaming). A request for it that is plain — HTTP/1.1
keep-alive, a ``Content-Length`` of at most ``max_body`` bytes, no ``Expect``, no
upgrade, nothing pipelined ahead of it — runs the route's ASGI callable with a light
request cycle (:class:`_FastCycle`) instead of uvicorn's: the same scope headers,
``receive`` and ``send`` messages and the same error handling (500 before a response
started, else the connection is closed), but no per-request event, middleware stack or
header regex pass; the response's head and its body leave in one write. Any other
request (and everything when the app names no fast path) takes uvicorn's own path.
Proxy-header rewriting (``X-Forwarded-For``) is not applied on the fast path: a route
served there must not depend on the client address.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["BoundedHttpToolsProtocol", "CoalescingTransport", "FastPath", "MAX_REQUEST_HEAD_BYTES",
           "REQUEST_HEAD_TIMEOUT", "server_options", "bind_listen_socket", "take_buffered_body"]

_log = logging.getLogger("chutes_subnet.httpserver")

#: Largest request head (request line + all headers) a server accepts.
MAX_REQUEST_HEAD_BYTES = 64 * 1024
#: Seconds a started request head may take to complete.
REQUEST_HEAD_TIMEOUT = 10.0


class CoalescingTransport:
    """Wraps a transport: writes made in one loop turn go out as one ``write``.

    The first write of a turn schedules the flush (``call_soon``); later writes of the
    same turn join it. Everything else is the wrapped transport's. Flow control is
    unchanged (the wrapped transport pauses the protocol), one turn later at most.
    """

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def write_now(self, data: bytes) -> None:
        """Write at once (after anything gathered this turn, which keeps the order)."""
        if self._pending:
            self._pending.append(data)
        else:
            self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@dataclass(frozen=True)
class FastPath:
    """One route served with a light request cycle (see the module doc).

    ``accepts(headers)`` (the request's lower-case header names to values) may refuse a
    request the light cycle should not take (the gateway: a streaming invoke).
    """

    method: bytes
    path: bytes
    app: Callable[..., Any]
    accepts: Callable[[dict[bytes, bytes]], bool] = lambda _headers: True
    #: larger bodies take uvicorn's path (which reads them with back-pressure)
    max_body: int = 1 << 20


def take_buffered_body(receive: Any) -> bytes | None:
    """The whole request body when ``receive`` is a fast-path cycle's and the body is
    already in (taken: ``receive`` then reports only a disconnect); None otherwise, and
    the caller reads it through ``receive`` as usual. Saves a body timer per request."""
    cycle = getattr(receive, "__self__", None)
    if type(cycle) is not _FastCycle or cycle.more_body or cycle._delivered \
            or cycle.disconnected:
        return None
    cycle._delivered = True
    body, cycle.body = cycle.body, b""
    return body


def _find_fast_path(app: Any) -> FastPath | None:
    """The ``fast_path`` of ``app`` or of an app it wraps (uvicorn's middlewares keep the
    wrapped app as ``.app``)."""
    for _ in range(8):
        if app is None:
            return None
        fast = getattr(app, "fast_path", None)
        if isinstance(fast, FastPath):
            return fast
        app = getattr(app, "app", None)
    return None


class _FastCycle:
    """A fast-path request: fed by the protocol's parser, answered by the route's app.

    It stands in for uvicorn's ``RequestResponseCycle`` wherever the protocol touches
    its cycle (``response_complete``, ``keep_alive``, ``disconnected``, ``more_body``,
    ``message_event.set()`` on disconnect), so pipelining, keep-alive and graceful
    shutdown work as for any request.
    """

    __slots__ = ("proto", "body", "more_body", "response_started", "response_complete",
                 "disconnected", "keep_alive", "message_event", "_waiter", "_head",
                 "_length", "_chunked", "_delivered")

    def __init__(self, proto: BoundedHttpToolsProtocol) -> None:
        self.proto = proto
        self.body = b""
        self.more_body = True
        self.response_started = self.response_complete = self.disconnected = False
        self.keep_alive = True
        self.message_event = self  # the protocol calls message_event.set()
        self._waiter: asyncio.Future[None] | None = None
        self._head = b""
        self._length = 0
        self._chunked = False
        self._delivered = False

    # -- fed by the protocol ----------------------------------------------------------
    def set(self) -> None:
        """Body bytes, the end of the body or a disconnect arrived: wake ``receive``."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the ASGI side -----------------------------------------------------------------
    async def receive(self) -> dict[str, Any]:
        """The whole body once it is in (one message), then ``http.disconnect`` when the
        client goes."""
        if not self._delivered:
            while self.more_body and not self.disconnected:
                await self._wait()
            if not self.disconnected:
                self._delivered = True
                body, self.body = self.body, b""
                return {"type": "http.request", "body": body, "more_body": False}
        while not self.disconnected:
            await self._wait()
        return {"type": "http.disconnect"}

    async def _wait(self) -> None:
        self._waiter = self.proto.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {kind!r}")
            self.response_started = True
            self._head = self._build_head(message["status"], message.get("headers", ()))
            return
        if self.response_complete or kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self._chunked:
            data = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + \
                (b"" if more else b"0\r\n\r\n")
        else:
            self._length -= len(body)
            if self._length < 0 or (not more and self._length):
                raise RuntimeError("response body does not match its Content-Length")
            data = body
        if self._head:
            data, self._head = self._head + data, b""
        transport = self.proto.transport
        if data and not transport.is_closing():
            transport.write_now(data)  # type: ignore[attr-defined]
        if not more:
            self.response_complete = True
            if not self.keep_alive or self.more_body:  # (a request body still arriving)
                transport.close()
            self.proto.on_response_complete()
        elif self.proto.flow.write_paused:
            await self.proto.flow.drain()

    def _build_head(self, status: int, headers: Any) -> bytes:
        parts = [STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status]
        length: int | None = None
        lines = 1
        for name, value in (*self.proto.server_state.default_headers, *headers):
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)
            elif lower == b"transfer-encoding" or lower == b"connection":
                raise RuntimeError("a fast-path response sets its own framing")
            parts.append(b"%b: %b\r\n" % (lower, value))
            lines += 1
        if length is None:
            self._chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
            lines += 1
        else:
            self._length = length
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
            lines += 1
        head = b"".join(parts) + b"\r\n"
        # a CR or LF inside a name or value would split the head: refuse it
        if head.count(b"\n") != lines + 1 or head.count(b"\r") != lines + 1:
            raise RuntimeError("invalid HTTP header name or value")
        return head

    async def run(self, app: Callable[..., Any]) -> None:
        """The app answers the request; failures are handled as uvicorn does."""
        proto = self.proto
        try:
            await app(proto.scope, self.receive, self.send)
        except BaseException as exc:  # every failure is answered or closed
            _log.error("exception in the fast-path application", exc_info=exc)
            if not self.response_started and not self.disconnected:
                self.keep_alive = False
                self._head = b""
                await self.send({"type": "http.response.start", "status": 500,
                                 "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                             (b"content-length", b"21")]})
                await self.send({"type": "http.response.body", "body": b"Internal Server Error"})
            else:
                proto.transport.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            if not self.response_complete and not self.disconnected:
                _log.error("fast-path application returned without completing its response")
                proto.transport.close()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with a bound on the bytes received before a request's headers complete,
    writing through a :class:`CoalescingTransport`."""

    _head_bytes = 0
    _in_head = True
    _boundary_in_chunk = False
    _head_timer: Any = None
    head_timeout = REQUEST_HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # flow control keeps the real transport (pause/resume reading); writes coalesce
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._fast = _find_fast_path(self.app)

    def data_received(self, data: bytes) -> None:
        self._boundary_in_chunk = False
        super().data_received(data)
        if not self._in_head or self._boundary_in_chunk or self.transport.is_closing():
            return
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)
        # Count only chunks that lie wholly inside a request head. A chunk in which a
        # head or a message ended may carry body bytes; the next chunk is counted, so
        # a head can overrun the bound by at most one read before it is refused.
        self._head_bytes += len(data)
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            self.send_400_response("Request header fields too large.")

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.send_400_response("Request header timeout.")

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._in_head = False
        self._boundary_in_chunk = True
        self._head_bytes = 0
        fast = self._fast
        if fast is not None and self._fast_eligible(fast):
            self._start_fast(fast)
            return
        super().on_headers_complete()

    def _fast_eligible(self, fast: FastPath) -> bool:
        parser = self.parser
        if self.url != fast.path or parser.get_method() != fast.method \
                or self.expect_100_continue or parser.get_http_version() != "1.1" \
                or not parser.should_keep_alive() or parser.should_upgrade():
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # a request is still being answered: queue behind it, uvicorn's way
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            return False
        # (llhttp already refused a repeated Content-Length, or one beside Transfer-Encoding)
        headers = dict(self.headers)
        length = headers.get(b"content-length")
        return length is not None and b"transfer-encoding" not in headers \
            and length.isdigit() and int(length) <= fast.max_body and fast.accepts(headers)

    def _start_fast(self, fast: FastPath) -> None:
        scope = self.scope
        scope["method"] = fast.method.decode()
        scope["raw_path"] = fast.path
        scope["path"] = fast.path.decode()
        scope["query_string"] = b""
        self.cycle = cycle = _FastCycle(self)  # type: ignore[assignment]
        task = self.loop.create_task(cycle.run(fast.app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is _FastCycle:
            if not cycle.response_complete:
                cycle.body += body
                cycle.set()
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._boundary_in_chunk = True
        cycle = self.cycle
        if type(cycle) is _FastCycle:
            cycle.more_body = False
            cycle.set()
            return
        super().on_message_complete()


def server_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` used by the miner, gateway and validator.

    Bounded request heads (see module doc), keep-alive longer than common client
    pools (httpx keeps idle connections 5 s; a server closing at the same moment makes
    a reused connection fail), no access log (request lines are not secret, but the
    project logs its own sized, content-free lines), no ``server`` header.
    """
    return {"http": BoundedHttpToolsProtocol, "access_log": False, "server_header": False,
            "timeout_keep_alive": 30}


def bind_listen_socket(host: str, port: int, *, flag: str = "--port") -> socket.socket:
    """A bound, listening TCP socket for ``uvicorn.Server.serve(sockets=[...])``.

    Binding before anything is announced (the miner publishes its axon only after
    this) means a port conflict is found before the endpoint is advertised. Raises
    :class:`~chutes_subnet.errors.ConfigError` naming the address and ``flag``.
    """
    from chutes_subnet.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use: stop the other "
                              f"process or choose another {flag}") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"cannot listen on {host}: not an address of this machine; "
                              f"fix {flag}") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"no permission to listen on {host}:{port} (ports below 1024 "
                              f"need privileges); choose another {flag}") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; fix {flag}") from None
    sock.set_inheritable(True)
    return sock
