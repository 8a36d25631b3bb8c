"""Ledger fixtures: every ledger test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chutes_subnet.billing.ledger import Ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    led = Ledger(ledger_url)
    try:
        yield led
    finally:
        led.close()


@pytest.fixture(autouse=True)
def _token_cache(tmp_path, monkeypatch):
    # bt.Client.connect caches token symbols on disk; keep it out of $HOME.
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "symbols.json"))
