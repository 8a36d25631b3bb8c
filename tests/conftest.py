"""Shared fixtures: a real redis-server, the public Chutes client venv."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.servers import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chutes_client_venv():
    """The interpreter of a venv holding chutes-e2ee 0.1.0 (built once, cached)."""
    from tests import interop

    return interop.venv_python()
