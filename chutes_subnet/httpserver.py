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
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BoundedHttpToolsProtocol", "CoalescingTransport", "MAX_REQUEST_HEAD_BYTES", "REQUEST_HEAD_TIMEOUT",
           "server_options", "bind_listen_socket"]

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
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._boundary_in_chunk = True
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
