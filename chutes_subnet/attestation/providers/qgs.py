"""Client of Intel's TDX Quote Generation Service (QGS), for kernels without configfs-tsm.

The QGS runs on the host and turns a TDREPORT into a signed quote. Wire format
(facts from Intel's DCAP ``qgs_msg_lib.h``; all integers little-endian)::

    transport frame   u32 big-endian length of the message that follows
    qgs_msg_header    u16 major_version (1), u16 minor_version, u32 type,
                      u32 size (whole message incl. header), u32 error_code
    GET_QUOTE_REQ     header(type 0) + u32 report_size + u32 id_list_size
                      + report + id_list
    GET_QUOTE_RESP    header(type 1) + u32 selected_id_size + u32 quote_size
                      + selected_id + quote

Addresses: ``vsock:<cid>:<port>`` (the default, host CID 2, port 4050),
``tcp:<host>:<port>`` or ``unix:<path>``. Every socket operation is bounded by the
client's timeout and by one overall deadline.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from chutes_subnet.errors import AttestationError

__all__ = [
    "DEFAULT_QGS_ADDRESS",
    "MAX_QGS_MESSAGE",
    "QGS_ERRORS",
    "QgsAddress",
    "QgsClient",
    "QgsError",
    "build_get_quote_request",
    "frame_message",
    "parse_get_quote_response",
    "parse_qgs_address",
]

DEFAULT_QGS_ADDRESS = "vsock:2:4050"
#: Upper bound of one QGS message; real quotes are ~5-10 KiB.
MAX_QGS_MESSAGE = 256 * 1024
QGS_MAJOR_VERSION = 1
QGS_MINOR_VERSION = 0
GET_QUOTE_REQ = 0
GET_QUOTE_RESP = 1
_HEADER = struct.Struct("<HHIII")
_SIZES = struct.Struct("<II")
_BODY_AT = _HEADER.size + _SIZES.size
QGS_ERRORS: dict[int, str] = {
    0x12001: "unexpected error",
    0x12002: "out of memory",
    0x12003: "invalid parameter",
    0x12004: "invalid version",
    0x12005: "invalid message type",
    0x12006: "invalid message size",
    0x12007: "invalid error code",
}


class QgsError(AttestationError):
    """The QGS is unreachable, timed out, refused the request or answered garbage.

    ``error_code`` is the QGS's own code when it sent one, else ``None``.
    """

    def __init__(self, message: str, error_code: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code


def build_get_quote_request(tdreport: bytes, id_list: bytes = b"") -> bytes:
    """A GET_QUOTE_REQ message (without the transport frame) carrying ``tdreport``."""
    if not tdreport:
        raise ValueError("report must not be empty")
    size = _BODY_AT + len(tdreport) + len(id_list)
    return (_HEADER.pack(QGS_MAJOR_VERSION, QGS_MINOR_VERSION, GET_QUOTE_REQ, size, 0)
            + _SIZES.pack(len(tdreport), len(id_list)) + tdreport + id_list)


def frame_message(message: bytes) -> bytes:
    """Prefix ``message`` with its 4-byte big-endian length."""
    if len(message) > MAX_QGS_MESSAGE:
        raise ValueError("QGS message too large")
    return struct.pack(">I", len(message)) + message


def parse_get_quote_response(message: bytes) -> bytes:
    """The quote inside a GET_QUOTE_RESP message; raises :class:`QgsError`.

    Every declared size must account for every byte of ``message``.
    """
    if len(message) < _HEADER.size:
        raise QgsError("QGS response is shorter than its header")
    major, _minor, kind, size, error = _HEADER.unpack_from(message)
    if major != QGS_MAJOR_VERSION:
        raise QgsError(f"QGS response has unsupported version {major}")
    if kind != GET_QUOTE_RESP:
        raise QgsError(f"QGS response has unexpected message type {kind}")
    if size != len(message):
        raise QgsError("QGS response size field disagrees with the received length")
    if error != 0:
        name = QGS_ERRORS.get(error, "unknown error")
        raise QgsError(f"QGS refused the quote request: {name} ({error:#x})", error)
    if len(message) < _BODY_AT:
        raise QgsError("QGS response is shorter than its fixed fields")
    id_size, quote_size = _SIZES.unpack_from(message, _HEADER.size)
    if _BODY_AT + id_size + quote_size != len(message):
        raise QgsError("QGS response id/quote sizes do not add up to the message size")
    if quote_size == 0:
        raise QgsError("QGS returned an empty quote")
    return bytes(message[_BODY_AT + id_size:])


@dataclass(frozen=True)
class QgsAddress:
    """Where the QGS listens: ``family`` is ``vsock``, ``tcp`` or ``unix``."""

    family: str
    host: str
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.host}" if self.family == "unix" else f"{self.family}:{self.host}:{self.port}"


def parse_qgs_address(text: str) -> QgsAddress:
    """Parse ``vsock:<cid>:<port>``, ``tcp:<host>:<port>`` or ``unix:<path>``."""
    family, _, rest = text.partition(":")
    if family == "unix" and rest:
        return QgsAddress("unix", rest)
    host, _, port = rest.rpartition(":")
    if family in ("vsock", "tcp") and host and port.isdigit() and 0 < int(port) < 65536:
        if family == "vsock" and not host.isdigit():
            raise AttestationError(f"QGS vsock address needs a numeric CID: {text!r}")
        return QgsAddress(family, host.strip("[]"), int(port))
    raise AttestationError(
        f"invalid QGS address {text!r} (use vsock:<cid>:<port>, tcp:<host>:<port> or unix:<path>)")


def _connect(address: QgsAddress, timeout: float) -> socket.socket:
    if address.family == "vsock":
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        target: tuple[int, int] | str = (int(address.host), address.port)
    elif address.family == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address.host
    else:
        return socket.create_connection((address.host, address.port), timeout=timeout)
    try:
        sock.settimeout(timeout)
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


Connector = Callable[[QgsAddress, float], socket.socket]


class QgsClient:
    """Synchronous GET_QUOTE client; one connection per quote.

    ``connect`` (address, timeout) -> connected socket is injectable; the default
    opens vsock, TCP or unix sockets. ``timeout`` bounds the whole exchange.
    """

    def __init__(self, address: str | QgsAddress = DEFAULT_QGS_ADDRESS, *,
                 timeout: float = 30.0, connect: Connector | None = None) -> None:
        self.address = address if isinstance(address, QgsAddress) else parse_qgs_address(address)
        self.timeout = float(timeout)
        self._connect = connect or _connect

    def get_quote(self, tdreport: bytes) -> bytes:
        """Send ``tdreport`` and return the quote the QGS signed."""
        deadline = time.monotonic() + self.timeout
        try:
            sock = self._connect(self.address, self.timeout)
        except OSError as exc:
            raise QgsError(f"QGS at {self.address} is unreachable "
                           f"({type(exc).__name__}); is the qgs service running on the host?") from exc
        try:
            with sock:
                _send(sock, frame_message(build_get_quote_request(tdreport)), deadline)
                length = struct.unpack(">I", _recv_exact(sock, 4, deadline))[0]
                if not 0 < length <= MAX_QGS_MESSAGE:
                    raise QgsError(f"QGS announced a response of {length} bytes (limit {MAX_QGS_MESSAGE})")
                return parse_get_quote_response(_recv_exact(sock, length, deadline))
        except TimeoutError as exc:
            raise QgsError(f"QGS at {self.address} timed out after {self.timeout:g} s") from exc
        except OSError as exc:
            raise QgsError(f"QGS connection to {self.address} failed ({type(exc).__name__})") from exc


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("QGS deadline passed")
    return left


def _send(sock: socket.socket, data: bytes, deadline: float) -> None:
    sock.settimeout(_remaining(deadline))
    sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(min(n - len(buf), 65536))
        if not chunk:
            raise QgsError("QGS closed the connection before a complete response")
        buf += chunk
    return bytes(buf)
