"""Legacy TDX quotes: TDREPORT from ``/dev/tdx_guest`` plus the host's QGS.

For guest kernels without configfs-tsm (before Linux 6.7). Two steps:

1. ``TDX_CMD_GET_REPORT0`` ioctl on ``/dev/tdx_guest`` with ``struct tdx_report_req``
   (64-byte reportdata in, 1024-byte TDREPORT out; uapi ``linux/tdx-guest.h``).
2. The TDREPORT goes to the Quote Generation Service (:mod:`.qgs`), which returns
   the quote signed by the TD quoting enclave.

The device opener and the ioctl function are injectable so this runs without TDX.
The quote is checked to carry the same report_data before it is returned.
"""

from __future__ import annotations

import errno
import fcntl
import hmac
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.errors import AttestationError, QuoteFormatError

from .qgs import QgsClient

__all__ = [
    "LEGACY_TDX_DEVICE",
    "TDX_CMD_GET_REPORT0",
    "TDREPORT_LEN",
    "REPORTDATA_LEN",
    "TDREPORT_REPORTDATA_OFFSET",
    "TdxGuestDeviceProvider",
    "get_tdreport",
]

LEGACY_TDX_DEVICE = Path("/dev/tdx_guest")
REPORTDATA_LEN = 64
TDREPORT_LEN = 1024
#: report_data inside REPORTMACSTRUCT: type 4 + reserved 12 + CPUSVN 16 + two SHA-384 hashes.
TDREPORT_REPORTDATA_OFFSET = 128


def _iowr(kind: str, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | nr


#: ``_IOWR('T', 1, struct tdx_report_req)`` = 0xC4405401.
TDX_CMD_GET_REPORT0 = _iowr("T", 1, REPORTDATA_LEN + TDREPORT_LEN)

Opener = Callable[[str, int], int]
Ioctl = Callable[[int, int, bytearray], Any]


def _ioctl(fd: int, request: int, buf: bytearray) -> Any:
    return fcntl.ioctl(fd, request, buf, True)


def get_tdreport(report_data: bytes, device: str | Path = LEGACY_TDX_DEVICE, *,
                 opener: Opener = os.open, ioctl: Ioctl = _ioctl) -> bytes:
    """The 1024-byte TDREPORT over ``report_data`` (64 bytes); raises ``AttestationError``."""
    if len(report_data) != REPORTDATA_LEN:
        raise AttestationError("report_data must be 64 bytes")
    try:
        fd = opener(str(device), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise AttestationError(f"TDX guest device {device} is missing; is this a TDX guest?") from exc
    except PermissionError as exc:
        raise AttestationError(f"permission denied opening {device}; run the miner as root "
                               "or grant it access to the device") from exc
    except OSError as exc:
        raise AttestationError(f"cannot open {device} ({errno.errorcode.get(exc.errno or 0, 'error')})") from exc
    req = bytearray(report_data) + bytearray(TDREPORT_LEN)
    try:
        ioctl(fd, TDX_CMD_GET_REPORT0, req)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "error")
        raise AttestationError(f"TDX_CMD_GET_REPORT0 ioctl on {device} failed ({name})") from exc
    finally:
        os.close(fd)
    tdreport = bytes(req[REPORTDATA_LEN:])
    at = TDREPORT_REPORTDATA_OFFSET
    if not hmac.compare_digest(tdreport[at:at + REPORTDATA_LEN], bytes(report_data)):
        raise AttestationError("TDREPORT from the TDX guest device does not carry our report_data")
    return tdreport


class TdxGuestDeviceProvider:
    """TDX quotes through ``/dev/tdx_guest`` and the host QGS (legacy kernels).

    ``qgs`` defaults to :class:`QgsClient` on vsock CID 2, port 4050. ``opener``
    and ``ioctl`` are test seams for the device.
    """

    def __init__(self, device: str | Path = LEGACY_TDX_DEVICE, qgs: QgsClient | None = None, *,
                 opener: Opener = os.open, ioctl: Ioctl = _ioctl) -> None:
        self.device = Path(device)
        if not self.device.exists():
            raise AttestationError(f"TDX guest device {self.device} is missing; is this a TDX guest?")
        self.qgs = qgs or QgsClient()
        self._opener, self._ioctl = opener, ioctl

    def quote(self, report_data: bytes) -> bytes:
        """One quote over ``report_data`` (64 bytes)."""
        tdreport = get_tdreport(report_data, self.device, opener=self._opener, ioctl=self._ioctl)
        quote = self.qgs.get_quote(tdreport)
        try:
            carried = parse_quote(quote).report.report_data
        except QuoteFormatError as exc:
            raise AttestationError(f"QGS returned a malformed quote: {exc}") from exc
        if not hmac.compare_digest(carried, bytes(report_data)):
            raise AttestationError("QGS returned a quote over a different report_data")
        return quote
