"""Runtime event log and RTMR replay (the dstack runtime-event format).

A TD's runtime measurement register starts at 48 zero bytes and only ever moves by
``extend``: ``rtmr = SHA384(rtmr || digest)``. The event log records, in order, what
each digest stands for, so a verifier can recompute the register from the log and
trust the payloads once the result equals the quote's (signed) register value.

One event (wire form, as dstack publishes it)::

    {"imr": 0..3, "event_type": u32, "digest": 96 hex, "event": name, "event_payload": hex}

Digest rule for runtime events (``event_type`` :data:`RUNTIME_EVENT_TYPE`,
0x08000001, the type dstack uses; a dstack guest agent's ``EmitEvent`` produces the
same digest)::

    digest = SHA384(u32le(event_type) || b":" || name (UTF-8) || b":" || payload)

The workload event (:func:`workload_event`) is the runtime event named
:data:`WORKLOAD_EVENT_NAME` whose payload is the 48-byte SHA-384 of the workload
manifest's canonical bytes (:mod:`.manifest`). Every RTMR3 event must be a runtime
event whose digest follows the rule, so no RTMR3 payload is unbound.

:func:`parse_event_log` is strict and bounded and raises only :class:`EventLogError`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chutes_subnet.errors import AttestationError

from .manifest import WorkloadManifest

__all__ = [
    "MAX_EVENTS",
    "MAX_PAYLOAD_BYTES",
    "RUNTIME_EVENT_TYPE",
    "WORKLOAD_EVENT_NAME",
    "WORKLOAD_IMR",
    "EventLogError",
    "RuntimeEvent",
    "event_digest",
    "expected_rtmr3",
    "extend",
    "parse_event_log",
    "replay",
    "workload_event",
]

RUNTIME_EVENT_TYPE = 0x08000001
WORKLOAD_EVENT_NAME = "chutes-workload"
WORKLOAD_IMR = 3
MAX_EVENTS = 256
MAX_PAYLOAD_BYTES = 8192
ZERO_MR = bytes(48)
_KEYS = frozenset({"imr", "event_type", "digest", "event", "event_payload"})
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


class EventLogError(AttestationError):
    """An event log is malformed (shape, bounds, or a digest that breaks the rule)."""


def event_digest(event_type: int, name: str, payload: bytes) -> bytes:
    """The runtime-event digest rule (see module doc)."""
    return hashlib.sha384(struct.pack("<I", event_type) + b":" + name.encode("utf-8")
                          + b":" + payload).digest()


def extend(register: bytes, digest: bytes) -> bytes:
    """One RTMR extension: ``SHA384(register || digest)``."""
    return hashlib.sha384(register + digest).digest()


@dataclass(frozen=True)
class RuntimeEvent:
    """One event-log entry."""

    imr: int
    event_type: int
    digest: bytes
    name: str
    payload: bytes

    @classmethod
    def runtime(cls, name: str, payload: bytes, imr: int = WORKLOAD_IMR) -> RuntimeEvent:
        """A runtime event with its digest computed by the rule."""
        return cls(imr, RUNTIME_EVENT_TYPE, event_digest(RUNTIME_EVENT_TYPE, name, payload),
                   name, bytes(payload))

    @property
    def follows_digest_rule(self) -> bool:
        return self.event_type == RUNTIME_EVENT_TYPE and hmac.compare_digest(
            event_digest(self.event_type, self.name, self.payload), self.digest)

    @property
    def is_workload(self) -> bool:
        return self.imr == WORKLOAD_IMR and self.name == WORKLOAD_EVENT_NAME

    def to_wire(self) -> dict[str, Any]:
        return {"imr": self.imr, "event_type": self.event_type, "digest": self.digest.hex(),
                "event": self.name, "event_payload": self.payload.hex()}


def _int(value: object, what: str, top: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise EventLogError(f"event {what} must be an integer 0..{top}")
    return value


def _hex(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * limit or not _HEX.fullmatch(value):
        raise EventLogError(f"event {what} must be hex of at most {limit} bytes")
    return bytes.fromhex(value)


def _event(entry: object) -> RuntimeEvent:
    if not isinstance(entry, dict) or set(entry) != _KEYS:
        raise EventLogError(f"each event must be an object with exactly {sorted(_KEYS)}")
    name = entry["event"]
    if not isinstance(name, str) or len(name) > 128 or not name.isprintable():
        raise EventLogError("event name must be at most 128 printable characters")
    digest = _hex(entry["digest"], "digest", 48)
    if len(digest) != 48:
        raise EventLogError("event digest must be 48 bytes (SHA-384)")
    return RuntimeEvent(_int(entry["imr"], "imr", 3), _int(entry["event_type"], "event_type",
                                                             0xFFFFFFFF),
                        digest, name, _hex(entry["event_payload"], "payload", MAX_PAYLOAD_BYTES))


def parse_event_log(data: object) -> tuple[RuntimeEvent, ...]:
    """Parse the wire form (a JSON list, at most :data:`MAX_EVENTS`); strict."""
    if not isinstance(data, list) or len(data) > MAX_EVENTS:
        raise EventLogError(f"an event log is a list of at most {MAX_EVENTS} events")
    return tuple(_event(e) for e in data)


def replay(events: Iterable[RuntimeEvent], imr: int = WORKLOAD_IMR) -> bytes:
    """The register value the events of ``imr`` produce, starting from zeros."""
    register = ZERO_MR
    for event in events:
        if event.imr == imr:
            register = extend(register, event.digest)
    return register


def workload_event(manifest: WorkloadManifest) -> RuntimeEvent:
    """The RTMR3 event that measures ``manifest``."""
    return RuntimeEvent.runtime(WORKLOAD_EVENT_NAME, manifest.sha384())


def expected_rtmr3(manifest: WorkloadManifest,
                   before: Sequence[RuntimeEvent] = ()) -> bytes:
    """RTMR3 of a TD whose log is ``before`` followed by the workload event."""
    return replay([*before, workload_event(manifest)])
