"""Attested miner instances: the record, the store protocol and its ownership rules.

The validator writes a record after an instance's attestation verified; gateways only
ever route to records returned by :meth:`InstanceRegistry.list_verified` (not yet
expired), so an instance whose attestation lapses drops out of discovery and routing
without an explicit removal.

Ownership (DESIGN B1). ``instance_id`` is derived from the attested E2EE key
(:mod:`chutes_subnet.instance_id`), so a record is identified by
``(hotkey, instance_id)``:

* :func:`check_record` refuses a record whose ``instance_id`` is not the one its
  ``e2e_pubkey`` derives (every store calls it on write, and on read where the bytes
  come from a file other processes write);
* :func:`admit` lets a hotkey create or refresh only its own records: a record with
  the same ``instance_id`` held by another hotkey is an :class:`InstanceConflict`,
  live or expired, until the holder removes it or it is pruned;
* ``remove(hotkey, instance_id)`` removes a record only for the hotkey that holds it.

A hotkey holds exactly one uid on a subnet, so "a uid's own records" are its hotkey's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from chutes_subnet.errors import ChutesSubnetError
from chutes_subnet.instance_id import instance_id_for_b64

__all__ = [
    "EXPIRED_RETENTION_SECONDS",
    "InstanceConflict",
    "InstanceRecord",
    "InstanceRegistry",
    "InvalidInstanceRecord",
    "RegistryError",
    "admit",
    "check_record",
    "models_of",
]

log = logging.getLogger("chutes_subnet.registry")

#: How long an expired record keeps holding its key against other hotkeys (and keeps
#: its chute "known") before :meth:`InstanceRegistry.prune` may drop it.
EXPIRED_RETENTION_SECONDS = 3600.0


class RegistryError(ChutesSubnetError):
    """A registry write was refused."""


class InvalidInstanceRecord(RegistryError, ValueError):
    """The record is malformed (e.g. its instance id is not derived from its key)."""


class InstanceConflict(RegistryError):
    """The instance id (i.e. the key) is already registered by another hotkey."""

    def __init__(self, instance_id: str, holder_uid: int, claimant_uid: int) -> None:
        super().__init__(f"instance {instance_id} is registered by uid {holder_uid}; "
                         f"refused for uid {claimant_uid}")
        self.instance_id = instance_id
        self.holder_uid = holder_uid
        self.claimant_uid = claimant_uid


@dataclass(frozen=True)
class InstanceRecord:
    """One attested miner instance serving one chute."""

    instance_id: str  #: instance_id_for_key(e2e_pubkey)
    chute_id: str
    model: str
    url: str  #: "http://ip:port" of the miner
    hotkey: str  #: the miner hotkey that holds this record
    uid: int
    e2e_pubkey: str  #: base64 ML-KEM-768 public key bound into the attestation
    e2e_versions: tuple[int, ...] = (1, 2)
    verified_at: float = 0.0
    expires_at: float = 0.0
    score: float = 0.0
    simulated: bool = False
    #: base64 Ed25519 receipt key bound into the attestation ("" = none: never billable)
    receipt_pubkey: str = ""
    #: validator-signed statements vouching for this key (compact JSON each, see
    #: :mod:`chutes_subnet.attestation.verify.signed_statements`), served to ``verify="quorum"`` clients
    statements: tuple[str, ...] = ()

    def is_live(self, now: float) -> bool:
        """True while the attestation verdict is still fresh."""
        return now < self.expires_at


def check_record(rec: InstanceRecord) -> None:
    """Raise :class:`InvalidInstanceRecord` unless ``rec`` names itself by its key."""
    if not rec.hotkey:
        raise InvalidInstanceRecord("record has no hotkey")
    try:
        derived = instance_id_for_b64(rec.e2e_pubkey)
    except ValueError:
        raise InvalidInstanceRecord("e2e_pubkey is not an ML-KEM-768 public key") from None
    if rec.instance_id != derived:
        raise InvalidInstanceRecord(
            f"instance_id {rec.instance_id[:40]!r} is not derived from its e2e_pubkey")


def admit(existing: InstanceRecord | None, rec: InstanceRecord) -> None:
    """Allow ``rec`` to replace ``existing`` (same instance id) only for the same hotkey.

    Raises :class:`InvalidInstanceRecord` or :class:`InstanceConflict` (logged).
    """
    check_record(rec)
    if existing is not None and existing.hotkey != rec.hotkey:
        conflict = InstanceConflict(rec.instance_id, existing.uid, rec.uid)
        log.warning("registry: %s (hotkey %s)", conflict, rec.hotkey)
        raise conflict


def models_of(records: list[InstanceRecord]) -> list[tuple[str, str]]:
    """Distinct ``(model, chute_id)`` pairs, sorted."""
    return sorted({(r.model, r.chute_id) for r in records})


@runtime_checkable
class InstanceRegistry(Protocol):
    """Storage of attested instances (validator writes, gateways read)."""

    def upsert(self, rec: InstanceRecord) -> None:
        """Create or refresh ``rec`` for its hotkey (see :func:`admit`)."""
        ...

    def remove(self, hotkey: str, instance_id: str) -> bool:
        """Remove the record if ``hotkey`` holds it; True if something was removed."""
        ...

    def get(self, instance_id: str) -> InstanceRecord | None:
        """The record with this id, live or expired."""
        ...

    def list_verified(
        self, chute_id: str | None = None, now: float | None = None
    ) -> list[InstanceRecord]:
        """Live records, optionally of one chute."""
        ...

    def models(self, now: float | None = None) -> list[tuple[str, str]]:
        """Distinct ``(model, chute_id)`` pairs served by a live instance."""
        ...

    def knows_chute(self, chute_id: str) -> bool:
        """True if any record, live or expired, serves ``chute_id``."""
        ...

    def prune(self, expired_before: float) -> int:
        """Drop records that expired before ``expired_before``; how many were dropped."""
        ...
