"""A lean HTTP/1.1 keep-alive client for the project's upstream calls (gateway -> miner).

The gateway relays sealed bytes to miners it already knows; a general-purpose client
(aiohttp) cost about 40 % of its CPU per request. This one does only what that path
needs, on an asyncio protocol with the ``httptools`` (llhttp) response parser:

* ``http://`` URLs only (the payload is end-to-end sealed; the transport is plain TCP);
  the request body is one ``bytes`` sent with ``Content-Length``; no ``HEAD``;
* a pool of idle keep-alive connections per origin (host, port), reused most recent
  first; at most ``max_connections`` sockets open in all (in use + idle): a request
  waits for a free one when all are busy, and an idle one is closed to make room;
* a connection is reused only when its response was read to the end and the server
  allowed keep-alive; an idle one is dropped as soon as the server closes it, or after
  ``keepalive_expiry`` seconds. A request sent on a reused connection that the server
  closes before answering any byte is retried once on a new connection (the server
  closed an idle connection just as the request went out);
* a timeout on every wait: ``connect_timeout`` to open a connection, ``read_timeout`` for
  silence while waiting for the response head or the next body bytes;
* a bounded response head (:data:`MAX_HEAD_BYTES`, :data:`MAX_HEADERS`); the body
  (``Content-Length``, chunked, or up to the close) is handed over as it arrives, reading
  from the socket pausing while :data:`READ_AHEAD_BYTES` are unconsumed, so a stream
  (SSE) is relayed without being buffered and a large body costs bounded memory.

Every failure is one :class:`HttpClientError` whose ``reason`` is a short code
(``connect``, ``connect_timeout``, ``read_timeout``, ``closed``, ``protocol``,
``head_too_large``) and whose ``before_response`` tells whether a response head had
arrived (only then did the upstream answer). Misuse (a CR/LF in a header, an
``https://`` URL) is a plain :class:`ValueError`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

from chutes_subnet.errors import ChutesSubnetError

__all__ = ["HttpClient", "HttpClientError", "Response", "MAX_HEAD_BYTES", "MAX_HEADERS",
           "READ_AHEAD_BYTES"]

#: Largest response head (status line + headers) accepted.
MAX_HEAD_BYTES = 64 * 1024
#: Most response header lines accepted.
MAX_HEADERS = 100
#: Unconsumed body bytes at which the socket stops being read until the caller catches up.
READ_AHEAD_BYTES = 256 * 1024

#: request headers the client writes itself (a caller's value is ignored)
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class HttpClientError(ChutesSubnetError):
    """An upstream call failed; ``reason`` is a code, ``before_response`` is True when no
    response head had arrived."""

    def __init__(self, reason: str, *, before_response: bool) -> None:
        super().__init__(f"upstream {reason}" + (" before responding" if before_response else ""))
        self.reason = reason
        self.before_response = before_response


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing (the reason is on the connection)."""


class _Headers(dict[str, str]):
    """Response headers: lower-case names; lookups ignore case; repeats joined by ``, ``."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


class _Connection(asyncio.Protocol):
    """One TCP connection: parses responses into a status, headers and body chunks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        #: when the current wait times out (loop time), watched by one timer per
        #: connection (re-armed only when it fires early), not one timer per wait
        self.deadline = 0.0
        self.watchdog: asyncio.TimerHandle | None = None
        self._begin()

    def _begin(self) -> None:
        """Reset the per-response state."""
        self.in_flight = False
        self.received = False
        self.head_done = False
        self.complete = False
        self.until_close = False
        self.keep_alive = False
        self.informational = False
        self.status = 0
        self.headers = _Headers()
        self.head_bytes = 0
        self.header_bytes = 0
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.error: HttpClientError | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("protocol")
        except (httptools.HttpParserError, _Stop):
            if self.complete:  # bytes after the response: answered, but not reusable
                self.keep_alive = False
                self.close()
            else:
                self._fail(self.error.reason if self.error is not None else "protocol")
        else:
            if not self.head_done:
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD_BYTES:
                    self._fail("head_too_large")
        self._wake()

    def eof_received(self) -> bool:
        if self.in_flight and self.head_done and self.until_close and not self.complete:
            self.complete = True  # a body delimited by the close ends here
            self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.in_flight and not self.complete:
            self._fail("closed")
        self._wake()

    # -- httptools callbacks ----------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:  # a second response nobody asked for
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if len(self.headers) >= MAX_HEADERS or self.header_bytes > MAX_HEAD_BYTES:
            self.error = HttpClientError("head_too_large", before_response=True)
            raise _Stop
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        prev = dict.get(self.headers, key)
        self.headers[key] = text if prev is None else f"{prev}, {text}"

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 1xx: an interim answer; the real one follows
            if status == 101:
                self.error = HttpClientError("protocol", before_response=True)
                raise _Stop
            self.informational = True  # its bytes still count towards the head bound
            self.headers = _Headers()
            return
        self.status = status
        self.head_done = True
        self.until_close = status not in (204, 304) and "content-length" not in self.headers \
            and "chunked" not in dict.get(self.headers, "transfer-encoding", "").lower()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > READ_AHEAD_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()

    # -- used by the client and the response ------------------------------------------
    def _fail(self, reason: str) -> None:
        if self.error is None:  # the first cause stands (closing reports "closed" next)
            self.error = HttpClientError(reason, before_response=not self.head_done)
        self.close()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timed_out(self) -> None:
        if not self.complete:
            self._fail("read_timeout")
            self._wake()

    async def wait(self, timeout: float) -> None:
        """Wait for the next event (head, body bytes, end, failure) at most ``timeout`` s
        (then the connection fails with ``read_timeout``); the caller checks the state."""
        if self.closed and self.error is None and not self.complete:
            self.error = HttpClientError("closed", before_response=not self.head_done)
        if self.error is not None or self.closed:
            return
        self.waiter = waiter = self.loop.create_future()
        self.deadline = deadline = self.loop.time() + timeout
        if self.watchdog is None or deadline < self.watchdog.when():
            if self.watchdog is not None:  # armed for later than this wait may last
                self.watchdog.cancel()
            self.watchdog = self.loop.call_at(deadline, self._watch)
        try:
            await waiter
        finally:
            self.waiter = None

    def _watch(self) -> None:
        """The watchdog fired: time out a wait past its deadline, follow a later one."""
        self.watchdog = None
        if self.waiter is None or self.closed:
            return  # nobody waits: re-armed by the next wait
        if self.loop.time() >= self.deadline:
            self._timed_out()
        else:
            self.watchdog = self.loop.call_at(self.deadline, self._watch)

    def take(self) -> bytes:
        """The oldest unconsumed body chunk (resuming reads once enough was consumed)."""
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered <= READ_AHEAD_BYTES // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    def send(self, data: bytes) -> None:
        if self.transport is None:
            raise RuntimeError("not connected")
        self._begin()
        self.in_flight = True
        self.transport.write(data)

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and self.error is None and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.transport is not None:
            self.transport.close()


class Response:
    """Status, headers and the not-yet-read body of one upstream response."""

    __slots__ = ("status", "headers", "_conn", "_client", "_origin", "_timeout")

    def __init__(self, conn: _Connection, client: HttpClient, origin: tuple[str, int],
                 timeout: float) -> None:
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self._conn: _Connection | None = conn
        self._client = client
        self._origin = origin
        self._timeout = timeout

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; :class:`HttpClientError` if the upstream breaks off
        or falls silent for ``read_timeout`` seconds."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("response already released")
        while True:
            if conn.chunks:
                yield conn.take()
            elif conn.complete:
                return
            elif conn.error is not None:
                raise conn.error
            else:
                await conn.wait(self._timeout)

    async def read_bounded(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body (reading stops there; the rest is dropped)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("response already released")
        if conn.complete and len(conn.chunks) == 1 and conn.buffered <= limit:
            return conn.take()  # the usual small answer, already here in one piece
        out = bytearray()
        async for chunk in self.iter_chunks():
            out += chunk[: limit - len(out)]
            if len(out) >= limit:
                break
        return bytes(out)

    def release(self) -> None:
        """Hand the connection back (to the pool if fully read, else closed). Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(self._origin, conn)


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> tuple[tuple[str, int], str, str]:
    """``url`` -> ((host, port), request target, Host header value)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs with a host are supported, not {url[:64]!r}")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return (parts.hostname, port), path, parts.netloc


class HttpClient:
    """Pooled HTTP/1.1 requests with timeouts and bounds (see the module doc)."""

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 300.0,
                 max_connections: int = 512, keepalive_expiry: float = 20.0) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._active = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Sockets open now (in use and idle)."""
        return len(self._open)

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> Response:
        """POST ``body``; returns once the response head arrived (release it when done)."""
        return await self.request("POST", url, headers, body)

    async def request(self, method: str, url: str, headers: Mapping[str, str],
                      body: bytes = b"") -> Response:
        """Send one request; returns once the response head arrived. The caller must
        :meth:`Response.release` it (a ``finally``)."""
        if self._closed:
            raise RuntimeError("client closed")
        if method == "HEAD":  # its answer's framing differs; nothing here needs it
            raise ValueError("HEAD requests are not supported")
        origin, path, host = _target(url)
        data = _request_head(method, path, host, headers, len(body)) + body
        await self._acquire_slot()
        try:
            conn = await self._checkout(origin)
            try:
                await self._exchange(conn, data)
            except HttpClientError as exc:
                if not (conn.reused and exc.reason == "closed" and not conn.received):
                    raise
                self._discard(conn)  # the server had closed it as it went out: once more
                conn = await self._checkout(origin, fresh=True)
                await self._exchange(conn, data)
        except BaseException:
            self._release_slot()
            raise
        return Response(conn, self, origin, self.read_timeout)

    async def _exchange(self, conn: _Connection, data: bytes) -> None:
        """Send ``data``; wait for the response head, ``read_timeout`` s in all (a server
        trickling header bytes does not extend it)."""
        loop = conn.loop
        deadline = loop.time() + self.read_timeout
        try:
            conn.send(data)
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(deadline - loop.time())
        except BaseException:
            self._discard(conn)
            raise

    async def _acquire_slot(self) -> None:
        if self._active < self.max_connections and not self._slot_waiters:
            self._active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter  # the releaser counted us in
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # granted and cancelled at once: pass it on
            elif waiter in self._slot_waiters:  # (a releaser may have dropped it already)
                self._slot_waiters.remove(waiter)
            raise

    def _release_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next waiter
                return
        self._active -= 1

    async def _checkout(self, origin: tuple[str, int], fresh: bool = False) -> _Connection:
        idle = self._idle.get(origin)
        if idle and not fresh:
            deadline = time.monotonic() - self.keepalive_expiry
            while idle:
                conn = idle.pop()
                if not conn.closed and conn.idle_since > deadline:
                    conn.reused = True
                    return conn
                self._discard(conn)
        if len(self._open) >= self.max_connections:
            self._evict_idle()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(loop), *origin)
        except TimeoutError:
            raise HttpClientError("connect_timeout", before_response=True) from None
        except OSError as exc:
            raise HttpClientError("connect", before_response=True) from exc
        if self._closed:
            conn.close()
            raise RuntimeError("client closed")
        self._open.add(conn)
        return conn

    def _evict_idle(self) -> None:
        """Close the oldest idle connection of any origin (to stay within the bound)."""
        for idle in self._idle.values():
            if idle:
                self._discard(idle.popleft())
                return

    def _release(self, origin: tuple[str, int], conn: _Connection) -> None:
        self._release_slot()
        if self._closed or not conn.reusable():
            self._discard(conn)
            return
        conn.in_flight = False
        conn.idle_since = now = time.monotonic()
        idle = self._idle.get(origin)
        if idle is None:
            idle = self._idle[origin] = deque()
        if idle and idle[0].idle_since < now - self.keepalive_expiry:
            self._discard(idle.popleft())
        idle.append(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def aclose(self) -> None:
        """Close every connection (responses still held fail with ``closed``)."""
        self._closed = True
        for conn in list(self._open):
            self._discard(conn)
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks


def _request_head(method: str, path: str, host: str, headers: Mapping[str, str],
                  length: int) -> bytes:
    """The request line and headers; a CR or LF in a name or value is a ValueError."""
    lines = [f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"]
    lines.extend(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in _OWN_HEADERS)
    lines.append(f"Content-Length: {length}\r\n\r\n")
    head = "".join(lines)
    if head.count("\n") != len(lines) + 2 or head.count("\r") != len(lines) + 2:
        raise ValueError("a request header name or value contains CR or LF")
    return head.encode("latin-1")
