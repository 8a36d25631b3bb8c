"""Miner side: extend RTMR3 with the workload event and keep the event log.

Runtime RTMR extension as TDX guests expose it (an :class:`RtmrDevice`):

* :class:`SysfsRtmr` — upstream Linux >= 6.16 (``tsm-mr``): the register is the file
  ``/sys/class/misc/tdx_guest/measurements/rtmr3:sha384``; reading returns its value,
  writing exactly 48 bytes extends it (the kernel issues ``TDG.MR.RTMR.EXTEND``).
* :class:`TdxGuestIoctlRtmr` — older guest kernels carrying Intel's out-of-tree
  ``TDX_CMD_EXTEND_RTMR`` ioctl on ``/dev/tdx_guest`` (``_IOR('T', 3, struct
  tdx_extend_rtmr_req {u8 data[48]; u8 index;})``, the one dstack's ``tdx-attest``
  uses); the value is read back from a TDREPORT (``TDX_CMD_GET_REPORT0``).
* :class:`SimulatedRtmr` — four in-memory registers for the simulated provider.

:class:`RuntimeLog` appends the event to the log *and then* extends the register
under one lock (so log order always equals extension order), checks the register
moved exactly as the log says, and persists the log (JSON lines) where the TD's
registers live as long as it does (``/run`` is cleared with the TD). A TD measures
one workload: measuring the same manifest again (a restarted miner) reuses the event;
another manifest is refused until the TD restarts.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from chutes_subnet.attestation.verify.eventlog import (
    EventLogError,
    RuntimeEvent,
    extend,
    parse_event_log,
    replay,
    workload_event,
)
from chutes_subnet.attestation.verify.manifest import WorkloadManifest
from chutes_subnet.errors import AttestationError

from .tdx_guest import LEGACY_TDX_DEVICE, Ioctl, Opener, _ioctl, get_tdreport

__all__ = [
    "DEFAULT_EVENT_LOG",
    "SYSFS_MEASUREMENTS",
    "TDX_CMD_EXTEND_RTMR",
    "RtmrDevice",
    "RuntimeLog",
    "SimulatedRtmr",
    "SysfsRtmr",
    "TdxGuestIoctlRtmr",
    "rtmr_device",
]

log = logging.getLogger(__name__)
SYSFS_MEASUREMENTS = Path("/sys/class/misc/tdx_guest/measurements")
DEFAULT_EVENT_LOG = Path("/run/chutes-subnet/rtmr3-events.jsonl")
MR_LEN = 48
#: ``_IOR('T', 3, struct tdx_extend_rtmr_req)`` (49 bytes) = 0x80315403.
TDX_CMD_EXTEND_RTMR = (2 << 30) | ((MR_LEN + 1) << 16) | (ord("T") << 8) | 3
#: RTMR0 inside a TDREPORT: REPORTMACSTRUCT 256 + TEE_TCB_INFO 239 + reserved 17, then
#: TDINFO: ATTRIBUTES 8 | XFAM 8 | MRTD 48 | MRCONFIGID 48 | MROWNER 48 | MROWNERCONFIG 48.
TDREPORT_RTMR0_OFFSET = 512 + 8 + 8 + 4 * MR_LEN


class RtmrDevice(Protocol):
    """A TD's runtime measurement registers."""

    def read(self, index: int) -> bytes:
        """The register's current 48-byte value."""
        ...

    def extend(self, index: int, digest: bytes) -> None:
        """``register = SHA384(register || digest)``."""
        ...


def _check(index: int, digest: bytes | None = None) -> None:
    if index not in (0, 1, 2, 3):
        raise AttestationError("RTMR index must be 0..3")
    if digest is not None and len(digest) != MR_LEN:
        raise AttestationError("an RTMR extension is 48 bytes")


class SysfsRtmr:
    """Upstream Linux (>= 6.16) ``tsm-mr`` sysfs attributes of the TDX guest device."""

    def __init__(self, base: str | Path = SYSFS_MEASUREMENTS) -> None:
        self.base = Path(base)
        if not (self.base / "rtmr3:sha384").exists():
            raise AttestationError(f"no TDX RTMR sysfs interface at {self.base}")

    def _path(self, index: int) -> Path:
        return self.base / f"rtmr{index}:sha384"

    def read(self, index: int) -> bytes:
        _check(index)
        try:
            raw = self._path(index).read_bytes()
        except OSError as exc:
            raise AttestationError(f"cannot read RTMR{index}: {exc.strerror}") from exc
        if len(raw) == MR_LEN:
            return raw
        try:  # some kernels print hex
            value = bytes.fromhex(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            value = b""
        if len(value) != MR_LEN:
            raise AttestationError(f"RTMR{index} attribute has an unexpected format")
        return value

    def extend(self, index: int, digest: bytes) -> None:
        _check(index, digest)
        try:
            fd = os.open(self._path(index), os.O_WRONLY)
            try:
                if os.write(fd, digest) != MR_LEN:
                    raise AttestationError(f"short write extending RTMR{index}")
            finally:
                os.close(fd)
        except OSError as exc:
            raise AttestationError(f"extending RTMR{index} failed: {exc.strerror}") from exc


class TdxGuestIoctlRtmr:
    """``TDX_CMD_EXTEND_RTMR`` on ``/dev/tdx_guest`` (kernels with Intel's patch)."""

    def __init__(self, device: str | Path = LEGACY_TDX_DEVICE, *, opener: Opener = os.open,
                 ioctl: Ioctl = _ioctl) -> None:
        self.device = Path(device)
        self._opener, self._ioctl = opener, ioctl

    def read(self, index: int) -> bytes:
        _check(index)
        report = get_tdreport(bytes(64), self.device, opener=self._opener, ioctl=self._ioctl)
        start = TDREPORT_RTMR0_OFFSET + index * MR_LEN
        return report[start : start + MR_LEN]

    def extend(self, index: int, digest: bytes) -> None:
        _check(index, digest)
        try:
            fd = self._opener(str(self.device), os.O_RDWR)
        except OSError as exc:
            raise AttestationError(f"cannot open {self.device}: {exc.strerror}") from exc
        try:
            self._ioctl(fd, TDX_CMD_EXTEND_RTMR, bytearray(digest + bytes([index])))
        except OSError as exc:
            raise AttestationError(f"TDX_CMD_EXTEND_RTMR failed: {exc.strerror}") from exc
        finally:
            os.close(fd)


class SimulatedRtmr:
    """Four in-memory registers (the simulated TD). INSECURE: anyone can set them."""

    def __init__(self) -> None:
        self._regs = [bytes(MR_LEN)] * 4

    def read(self, index: int) -> bytes:
        _check(index)
        return self._regs[index]

    def extend(self, index: int, digest: bytes) -> None:
        _check(index, digest)
        self._regs[index] = extend(self._regs[index], digest)


def rtmr_device(sysfs: str | Path = SYSFS_MEASUREMENTS,
                device: str | Path = LEGACY_TDX_DEVICE) -> RtmrDevice:
    """The guest's runtime RTMR interface: sysfs when present, else the legacy ioctl."""
    if (Path(sysfs) / "rtmr3:sha384").exists():
        return SysfsRtmr(sysfs)
    if Path(device).exists():
        return TdxGuestIoctlRtmr(device)
    raise AttestationError(f"no runtime RTMR interface: neither {sysfs} nor {device} exists")


class RuntimeLog:
    """RTMR3 events of this TD, kept in step with the register (see module doc)."""

    def __init__(self, device: RtmrDevice, path: str | Path | None = None) -> None:
        self.device = device
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._memory: list[RuntimeEvent] = []

    def events(self) -> tuple[RuntimeEvent, ...]:
        """Every RTMR3 event recorded so far."""
        with self._lock:
            return tuple(self._load())

    def to_wire(self) -> list[dict[str, Any]]:
        return [e.to_wire() for e in self.events()]

    def measure_workload(self, manifest: WorkloadManifest) -> RuntimeEvent:
        """Extend RTMR3 with ``manifest`` (idempotent for the same manifest)."""
        with self._lock, self._file_lock():
            events = self._load()
            current = self.device.read(3)
            if not hmac.compare_digest(replay(events), current):
                raise AttestationError("the RTMR3 event log does not match the register; "
                                       "restart the TD")
            event = workload_event(manifest)
            measured = [e for e in events if e.is_workload]
            if measured:
                if len(measured) == 1 and hmac.compare_digest(measured[0].digest, event.digest):
                    log.info("RTMR3 already measures this workload manifest")
                    return event
                raise AttestationError("this TD already measured another workload manifest; "
                                       "start the new release in a fresh TD")
            self._append(event)
            self.device.extend(3, event.digest)
            if not hmac.compare_digest(self.device.read(3), extend(current, event.digest)):
                raise AttestationError("RTMR3 did not move as the event log says")
            log.info("RTMR3 extended with workload manifest %s", manifest.sha384().hex()[:16])
            return event

    def _load(self) -> list[RuntimeEvent]:
        if self.path is None:
            return list(self._memory)
        try:
            lines = self.path.read_text("utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise AttestationError(f"cannot read the event log {self.path}") from exc
        try:
            return list(parse_event_log([json.loads(line) for line in lines if line.strip()]))
        except (ValueError, EventLogError) as exc:
            raise AttestationError(f"the event log {self.path} is corrupt") from exc

    def _append(self, event: RuntimeEvent) -> None:
        if self.path is None:
            self._memory.append(event)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event.to_wire(), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _file_lock(self) -> Any:
        return _FileLock(self.path.with_suffix(".lock") if self.path else None)


class _FileLock:
    """``flock`` on a side file so two processes in one TD never interleave."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.fd = path, -1

    def __enter__(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1
