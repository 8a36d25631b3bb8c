"""Lean, pipelined Lua script calls to Redis for the gateway's per-request work.

The gateway calls Redis scripts on every routed request (the nonce consume; with shared
rate limits, the token bucket). Measured on the reference 2-core machine, redis-py's
asyncio client costs 90-120 us per ``EVALSHA`` round trip where the round trip itself
(loopback, a Lua ``GET``/``DEL``) takes about 12 us: most of the added latency of a
Redis-backed gateway. This module speaks just enough RESP2 for those calls:

* one TCP connection per event loop, opened on first use (``connect_timeout``), with
  ``AUTH`` and ``SELECT`` from the URL; replies are matched to calls in order, so any
  number of calls may be in flight (true pipelining), and the calls made in one
  event-loop turn leave in one ``write``;
* every call has a deadline (``timeout``): a late or broken connection is closed and
  every call waiting on it fails with :class:`RedisLinkError` (an ``OSError``); the
  next call opens a new connection;
* replies are bounded (line length, bulk size, array length, nesting) and anything
  else closes the connection;
* ``NOSCRIPT`` (a restarted or flushed server) loads the script and retries once.

Only ``redis://`` URLs over TCP are handled (:meth:`RedisAddress.parse` answers None for
``rediss://`` and ``unix://``: callers keep redis-py for those). Everything that is not
per request (issuing nonces, admin) stays on redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["RedisAddress", "RedisLinkError", "RedisReplyError", "ScriptClient", "pack_command"]

#: longest reply line (a status, an error, a length) accepted
_MAX_LINE = 4096
#: largest bulk string reply accepted (script results here are a few bytes)
_MAX_BULK = 64 * 1024
#: most elements of an array reply, and deepest nesting
_MAX_ARRAY = 64
_MAX_DEPTH = 2
#: unparsed reply bytes held before the connection is judged broken
_MAX_BUFFER = 1024 * 1024


class RedisLinkError(OSError):
    """The connection failed, timed out or broke the protocol (nothing is known of the
    calls in flight on it)."""


class RedisReplyError(Exception):
    """Redis answered a call with an error reply (``-ERR ...``), bounded to 200 chars."""


@dataclass(frozen=True)
class RedisAddress:
    """Where and how to connect, from a ``redis://`` URL."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> RedisAddress | None:
        """The address of a plain ``redis://[user:password@]host[:port][/db]`` URL; None
        for ``rediss://`` and ``unix://`` (TLS and sockets are left to redis-py).
        ``ValueError`` on a malformed one."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            return None
        if not parts.hostname:
            raise ValueError("redis URL has no host")
        db_text = parts.path.strip("/") or "0"
        if not db_text.isdigit() or int(db_text) > 65535:
            raise ValueError("redis URL database must be a small non-negative integer")
        return cls(parts.hostname, parts.port or 6379, int(db_text),
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)

    def __repr__(self) -> str:  # never the password
        return f"RedisAddress({self.host}:{self.port}/{self.db})"


def pack_command(*args: bytes | str | int) -> bytes:
    """One RESP2 command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Incomplete(Exception):
    """More bytes are needed for the next reply."""


def _parse(buf: bytes | bytearray, pos: int, depth: int = 0) -> tuple[Any, int]:
    """One reply at ``pos``: (value, position after it). Error replies are returned as
    :class:`RedisReplyError` values; ``_Incomplete`` or ``RedisLinkError`` is raised."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if len(buf) - pos > _MAX_LINE:
            raise RedisLinkError("redis reply line too long")
        raise _Incomplete
    if end - pos > _MAX_LINE:
        raise RedisLinkError("redis reply line too long")
    kind, line = buf[pos:pos + 1], bytes(buf[pos + 1:end])
    nxt = end + 2
    if kind == b":":
        return _int(line), nxt
    if kind == b"+":
        return line.decode("latin-1"), nxt
    if kind == b"-":
        return RedisReplyError(line[:200].decode("latin-1", "replace")), nxt
    if kind == b"$":
        size = _int(line)
        if size < 0:
            return None, nxt
        if size > _MAX_BULK:
            raise RedisLinkError("redis bulk reply too large")
        if len(buf) < nxt + size + 2:
            raise _Incomplete
        if buf[nxt + size:nxt + size + 2] != b"\r\n":
            raise RedisLinkError("redis bulk reply not terminated")
        return bytes(buf[nxt:nxt + size]), nxt + size + 2
    if kind == b"*":
        count = _int(line)
        if count < 0:
            return None, nxt
        if count > _MAX_ARRAY or depth >= _MAX_DEPTH:
            raise RedisLinkError("redis array reply too large or too deep")
        items = []
        for _ in range(count):
            item, nxt = _parse(buf, nxt, depth + 1)
            items.append(item)
        return items, nxt
    raise RedisLinkError("redis reply of an unknown type")


def _int(line: bytes) -> int:
    digits = line[1:] if line[:1] == b"-" else line
    if not 0 < len(digits) <= 19 or not digits.isdigit():
        raise RedisLinkError("redis reply integer malformed")
    return int(line)


class _RespConnection(asyncio.Protocol):
    """One connection: writes of a loop turn coalesced, replies matched in order.

    Deadlines: calls are answered in order, so only the oldest waiting call's deadline
    matters; one timer per connection watches it (not one timer per call).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()
        self.watchdog: asyncio.TimerHandle | None = None
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """Queue ``command``; its reply (or link failure) settles the returned future."""
        fut = self.loop.create_future()
        if self.closed:
            fut.set_exception(RedisLinkError("redis connection closed"))
            return fut
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(command)
        self.waiting.append(fut)
        deadline = self.loop.time() + self.timeout
        self.deadlines.append(deadline)
        if self.watchdog is None:
            self.watchdog = self.loop.call_at(deadline, self._watch)
        return fut

    def _watch(self) -> None:
        """The oldest call's deadline may have passed: fail the connection, or watch the
        new oldest call."""
        self.watchdog = None
        if not self.deadlines or self.closed:
            return
        if self.loop.time() >= self.deadlines[0]:
            self.fail(RedisLinkError("redis call timed out"))
            return
        self.watchdog = self.loop.call_at(self.deadlines[0], self._watch)

    def _flush(self) -> None:
        out, self.out = self.out, []
        if out and self.transport is not None and not self.closed:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                value, pos = _parse(buf, pos)
                if not self.waiting:
                    raise RedisLinkError("redis sent a reply nobody asked for")
                fut = self.waiting.popleft()
                self.deadlines.popleft()
                if not fut.done():
                    fut.set_result(value)
        except _Incomplete:
            if len(buf) - pos > _MAX_BUFFER:
                self.fail(RedisLinkError("redis reply too large"))
                return
        except RedisLinkError as exc:
            self.fail(exc)
            return
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisLinkError("redis connection lost"))

    def fail(self, exc: RedisLinkError) -> None:
        """Close; every call in flight fails with ``exc``."""
        self.closed = True
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.deadlines.clear()
        if self.transport is not None:
            self.transport.close()
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)


class ScriptClient:
    """``EVALSHA`` calls over one lean connection per event loop (see module doc)."""

    def __init__(self, address: RedisAddress, *, timeout: float = 2.0,
                 connect_timeout: float | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._conns: dict[asyncio.AbstractEventLoop, _RespConnection] = {}
        self._connecting: dict[asyncio.AbstractEventLoop, asyncio.Future[_RespConnection]] = {}

    async def evalsha(self, script: str, keys: Sequence[str], args: Sequence[bytes | str]) -> Any:
        """Run ``script`` (by its SHA-1; loaded on ``NOSCRIPT``) with ``keys`` and ``args``.
        The reply (int, str, bytes, list, None); :class:`RedisReplyError` for an error
        reply, :class:`RedisLinkError` when the connection fails or ``timeout`` passes."""
        sha = _sha1(script)
        command = pack_command(b"EVALSHA", sha, len(keys), *keys, *args)
        reply = await self._call(command)
        if isinstance(reply, RedisReplyError) and str(reply).startswith("NOSCRIPT"):
            loaded = await self._call(pack_command(b"SCRIPT", b"LOAD", script))
            if isinstance(loaded, RedisReplyError):
                raise loaded
            reply = await self._call(command)
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    async def _call(self, command: bytes) -> Any:
        loop = asyncio.get_running_loop()
        conn = self._conns.get(loop)
        if conn is None or conn.closed:
            conn = await self._connect(loop)
        return await conn.call(command)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _RespConnection:
        pending = self._connecting.get(loop)
        if pending is not None:  # another call of this loop is connecting: share it
            return await asyncio.shield(pending)
        pending = self._connecting[loop] = loop.create_future()
        try:
            conn = await self._open(loop)
        except (RedisLinkError, asyncio.CancelledError) as exc:
            pending.set_exception(exc if isinstance(exc, RedisLinkError)
                                  else RedisLinkError("redis connect cancelled"))
            pending.exception()  # retrieved: no "never retrieved" warning when alone
            raise
        finally:
            self._connecting.pop(loop, None)
        self._conns[loop] = conn
        pending.set_result(conn)
        return conn

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _RespConnection:
        addr = self.address
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _RespConnection(loop, self.timeout), addr.host, addr.port)
                setup = []
                if addr.password is not None:
                    setup.append(pack_command(b"AUTH", *([addr.username] if addr.username else []),
                                              addr.password))
                if addr.db:
                    setup.append(pack_command(b"SELECT", addr.db))
                replies = await asyncio.gather(*(conn.call(c) for c in setup))
        except TimeoutError:
            raise RedisLinkError("redis connect timed out") from None
        except OSError as exc:
            if isinstance(exc, RedisLinkError):
                raise
            raise RedisLinkError(f"redis connect failed: {exc.strerror or type(exc).__name__}") from None
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                conn.fail(RedisLinkError("redis refused the connection setup"))
                raise RedisLinkError(f"redis refused AUTH/SELECT: {str(reply)[:80]}")
        return conn

    async def aclose(self) -> None:
        """Close every connection (calls in flight fail with :class:`RedisLinkError`)."""
        for conn in list(self._conns.values()):
            conn.fail(RedisLinkError("redis client closed"))
        self._conns.clear()


_SHAS: dict[str, bytes] = {}


def _sha1(script: str) -> bytes:
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest().encode()
    return sha
