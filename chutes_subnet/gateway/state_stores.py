"""The shared-state stores of one gateway replica, all on one database.

``open_gateway_stores(url)`` opens one database (:mod:`chutes_subnet.stores.database`:
SQLite file or PostgreSQL) and the stores on it::

    stores = open_gateway_stores("postgresql://gw@db.internal/chutes")  # or a file path
    stores.keys, stores.usage, stores.journal
    stores.close()
"""

from __future__ import annotations

from dataclasses import dataclass

from chutes_subnet.stores.database import Database, open_database

from .api_keys import SQLApiKeyStore
from .journal import SQLJournal
from .usage import SQLUsageMeter

__all__ = ["GatewayStores", "open_gateway_stores"]


@dataclass
class GatewayStores:
    """The stores of one gateway replica, all on one database."""

    db: Database
    keys: SQLApiKeyStore
    usage: SQLUsageMeter
    journal: SQLJournal

    def close(self) -> None:
        """Flush what is buffered, then close the database."""
        try:
            self.journal.flush()
            self.usage.flush()
        finally:
            self.db.close()


def open_gateway_stores(url: str, *, key_cache_seconds: float = 5.0) -> GatewayStores:
    """Keys, usage and journal on the database at ``url`` (migrated on open)."""
    db = open_database(url)
    return GatewayStores(db=db, keys=SQLApiKeyStore(db, cache_seconds=key_cache_seconds),
                         usage=SQLUsageMeter(db), journal=SQLJournal(db))
