"""Instance registry in a SQLite file (WAL), shared by a validator and gateways on one
host: :class:`~chutes_subnet.registry.sql.SQLInstanceRegistry` on a SQLite database.
(The pre-B1 ``instances`` table of older files is left untouched and unused.)"""

from __future__ import annotations

from pathlib import Path

from chutes_subnet.registry.sql import SQLInstanceRegistry

__all__ = ["SQLiteInstanceRegistry"]


class SQLiteInstanceRegistry(SQLInstanceRegistry):
    """The registry in a SQLite file; reads cached for ``cache_seconds`` (default 1 s),
    so a validator's update becomes visible to other processes within that window."""

    def __init__(self, path: str | Path, *, cache_seconds: float = 1.0) -> None:
        from chutes_subnet.stores.database import SQLiteDatabase

        super().__init__(SQLiteDatabase(path), cache_seconds=cache_seconds, owns_db=True)
