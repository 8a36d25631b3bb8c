"""Registries shared by the validator (writer) and gateways (readers).

* :mod:`.instances` — the attested-instance record, its store protocol and the
  ownership rules (DESIGN B1: an instance is named by its attested key);
* :mod:`.memory`, :mod:`.sqlite` — the embedded stores;
* :func:`open_registry` — a store from a URL (``memory://``, ``sqlite:///path``).
"""

from __future__ import annotations

from pathlib import Path

from chutes_subnet.registry.instances import (
    EXPIRED_RETENTION_SECONDS,
    InstanceConflict,
    InstanceRecord,
    InstanceRegistry,
    InvalidInstanceRecord,
    RegistryError,
    check_record,
)
from chutes_subnet.registry.memory import MemoryInstanceRegistry
from chutes_subnet.registry.sqlite import SQLiteInstanceRegistry

__all__ = [
    "EXPIRED_RETENTION_SECONDS",
    "InstanceConflict",
    "InstanceRecord",
    "InstanceRegistry",
    "InvalidInstanceRecord",
    "MemoryInstanceRegistry",
    "RegistryError",
    "SQLiteInstanceRegistry",
    "check_record",
    "open_registry",
]


def open_registry(url: str) -> InstanceRegistry:
    """``memory://`` or ``sqlite:///abs/path.db`` -> an instance registry."""
    if url.startswith("memory://"):
        return MemoryInstanceRegistry()
    if url.startswith("sqlite://") and url[len("sqlite://"):]:
        return SQLiteInstanceRegistry(Path(url[len("sqlite://"):]))
    raise ValueError(f"registry URL {url!r} is not supported: use sqlite:///path/registry.db "
                     "(shared with the validator) or memory://")
