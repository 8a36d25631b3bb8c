"""The gateway's and validator's shared state on SQLite (embedded default) or PostgreSQL.

Modules: :mod:`~chutes_subnet.stores.database` (the engine seam: ``open_database(url)``,
``is_postgres_url``), :mod:`~chutes_subnet.stores.migrations` (versioned schema). The
stores written against it live with their users (``gateway/api_keys.py``,
``gateway/usage.py``, ``gateway/journal.py``, ``registry/``, ``billing/``); one gateway
replica's set is :func:`chutes_subnet.gateway.state_stores.open_gateway_stores`.
"""

from __future__ import annotations

from chutes_subnet.stores.database import is_postgres_url, open_database

__all__ = ["is_postgres_url", "open_database"]
