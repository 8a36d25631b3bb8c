"""The data directory is created 0700 and the SQLite files in it 0600 (issue 17,
hygiene): API-key hashes, usage, nonces and validator state are nobody else's."""

from __future__ import annotations

import os
import stat

import pytest

from chutes_subnet.cli import main
from chutes_subnet.datadir import data_dir, private_db_path, private_sqlite_url


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)  # the usual default: would give 0755 / 0644
    try:
        yield
    finally:
        os.umask(old)


def test_keys_create_makes_a_private_data_dir_and_db(tmp_path, monkeypatch, loose_umask, capsys):
    home = tmp_path / "home" / "chutes"
    monkeypatch.setenv("CHUTES_SUBNET_HOME", str(home))
    assert main(["keys", "create", "--name", "app", "--json"]) == 0
    assert _mode(home) == 0o700
    db = home / "gateway.db"
    assert _mode(db) == 0o600
    for companion in (home / "gateway.db-wal", home / "gateway.db-shm"):
        if companion.exists():
            assert _mode(companion) == 0o600, companion
    assert "csk_" in capsys.readouterr().out


def test_gateway_settings_prepare_private_sqlite_stores(tmp_path, monkeypatch, loose_umask):
    from chutes_subnet.gateway import cli as gateway_cli

    monkeypatch.setenv("CHUTES_SUBNET_HOME", str(tmp_path / "d"))
    from chutes_subnet.cli import build_parser

    args = build_parser().parse_args(["gateway", "--dangerous-unsigned-forwards"])
    settings = gateway_cli._gateway_settings(args)
    for name in ("registry.db", "nonces.db", "gateway.db"):
        assert _mode(tmp_path / "d" / name) == 0o600, name
    assert settings["nonces"] == f"sqlite://{tmp_path / 'd' / 'nonces.db'}"


def test_existing_files_and_other_urls_are_left_alone(tmp_path, loose_umask):
    mine = tmp_path / "x.db"
    mine.write_bytes(b"")
    os.chmod(mine, 0o640)
    assert private_db_path(mine) == mine and _mode(mine) == 0o640
    assert private_sqlite_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert private_sqlite_url("memory://") == "memory://"
    assert str(private_db_path(":memory:")) == ":memory:"


def test_data_dir_honours_the_environment(tmp_path, monkeypatch, loose_umask):
    monkeypatch.setenv("CHUTES_SUBNET_HOME", str(tmp_path / "h"))
    assert data_dir() == tmp_path / "h" and _mode(tmp_path / "h") == 0o700
