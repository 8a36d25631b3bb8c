"""Registries shared by the validator (writer) and gateways (readers).

* :mod:`.instances` — the attested-instance record, its store protocol and the
  ownership rules (DESIGN B1: an instance is named by its attested key);
* :mod:`.memory`, :mod:`.sqlite` — the embedded stores;
* :mod:`.sql` — the same store on PostgreSQL for validators and gateway fleets;
* :func:`open_registry` — a store from a URL (``memory://``, ``sqlite:///path``,
  ``postgresql://…``).
* :mod:`.chutes` — chutes as deployments (spec, validation, the store protocol) and
  :mod:`.chute_store` — the chute registry on SQLite / PostgreSQL;
* :mod:`.demand` — per-chute demand, targets and the supply multiplier.
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
from chutes_subnet.registry.sql import SQLInstanceRegistry
from chutes_subnet.registry.sqlite import SQLiteInstanceRegistry

__all__ = [
    "EXPIRED_RETENTION_SECONDS",
    "InstanceConflict",
    "InstanceRecord",
    "InstanceRegistry",
    "InvalidInstanceRecord",
    "MemoryInstanceRegistry",
    "RegistryError",
    "SQLInstanceRegistry",
    "SQLiteInstanceRegistry",
    "check_record",
    "open_registry",
]


def open_registry(url: str) -> InstanceRegistry:
    """``memory://``, ``sqlite:///abs/path.db`` or ``postgresql://…`` -> a registry."""
    if url.startswith("memory://"):
        return MemoryInstanceRegistry()
    if url.startswith(("postgresql://", "postgres://")):
        from chutes_subnet.stores.database import PostgresDatabase

        # the gateway refreshes it every second off its event loop; the longer cache
        # window only matters if that stalls
        return SQLInstanceRegistry(PostgresDatabase(url), cache_seconds=5.0, owns_db=True)
    if url.startswith("sqlite://") and url[len("sqlite://"):]:
        return SQLiteInstanceRegistry(Path(url[len("sqlite://"):]))
    raise ValueError(f"registry URL {url!r} is not supported: use sqlite:///path/registry.db "
                     "(shared with the validator), postgresql://user@host/db or memory://")
