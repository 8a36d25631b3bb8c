"""Real servers on loopback for integration tests: uvicorn in a thread, redis-server,
PostgreSQL (programs located by :mod:`tests.server_binaries`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from tests.server_binaries import postgres_bindir, redis_server_binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UvicornThread:
    """A real uvicorn server running ``app`` in a background thread on 127.0.0.1, on the
    project's server settings (:func:`~chutes_subnet.httpserver.server_options`: bounded
    heads, coalesced writes, an app's fast path) unless ``config`` says otherwise."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        from chutes_subnet.httpserver import server_options

        self.port = port or free_port()
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                             lifespan="on", **{**server_options(), **config})
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> UvicornThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RedisServer:
    """A real redis-server process on a free loopback port, without persistence."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="chutes-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = redis_server_binary()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


_PG_USER = "chutes"


def _world_traversable(path: Path) -> bool:
    """True when an unprivileged user can reach ``path`` (every ancestor o+x)."""
    for part in [path, *path.parents]:
        if not part.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _unprivileged_copy(bindir: Path) -> Path:
    """``bindir`` itself, or (as root, when ``nobody`` cannot reach it, e.g. a wheel under
    /root) a world-readable copy made once per machine. A wheel's binaries find their
    shared libraries through an RPATH relative to ``bin/`` (``<pkg>.libs`` beside the
    package), so the copy keeps that layout."""
    if os.geteuid() != 0 or _world_traversable(bindir):
        return bindir
    install, package = bindir.parent, bindir.parent.parent
    cache = Path(tempfile.gettempdir()) / f"chutes-subnet-pg-{install.stat().st_ino}"
    copied_bindir = cache / package.name / install.name / "bin"
    if (copied_bindir / "postgres").exists():
        return copied_bindir
    staging = Path(tempfile.mkdtemp(prefix="chutes-subnet-pg-staging-"))
    shutil.copytree(install, staging / package.name / install.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, staging / libs.name, symlinks=True)
    for root, dirs, files in os.walk(staging):
        for name in dirs + files:
            full = Path(root, name)
            if full.is_symlink():
                continue
            mode = full.stat().st_mode | stat.S_IRGRP | stat.S_IROTH
            if full.is_dir() or mode & stat.S_IXUSR:
                mode |= stat.S_IXGRP | stat.S_IXOTH
            full.chmod(mode)
    staging.chmod(0o755)
    with contextlib.suppress(OSError):  # another test process won the race: use theirs
        staging.rename(cache)
    shutil.rmtree(staging, ignore_errors=True)
    return copied_bindir


class PostgresServer:
    """A real PostgreSQL server on a free loopback port (initdb in a temp dir, trust auth,
    no fsync). As root it runs as ``nobody``: postgres refuses to run as root."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chutes-pg-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._bindir: Path | None = None
        self._db_count = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_PG_USER}@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict[str, Any]:
        return {"user": "nobody", "group": "nogroup"} if os.geteuid() == 0 else {}

    def start(self) -> PostgresServer:
        self._bindir = _unprivileged_copy(postgres_bindir())
        data, sock = self.dir / "data", self.dir / "sock"
        if not data.exists():
            sock.mkdir()
            if os.geteuid() == 0:
                for path in (self.dir, sock):
                    shutil.chown(path, "nobody", "nogroup")
            subprocess.run(
                [str(self._bindir / "initdb"), "-D", str(data), "-U", _PG_USER, "--auth=trust",
                 "-E", "UTF8", "--locale=C", "--no-sync"],
                check=True, capture_output=True, timeout=120, **self._run_as())
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(self._bindir / "postgres"), "-D", str(data), "-p", str(self.port),
             "-k", str(sock), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300"],
            stdout=log, stderr=log, **self._run_as())
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.psql("SELECT 1", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        tail = (self.dir / "server.log").read_text(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"PostgreSQL did not start: {' '.join(tail) or 'no log output'}")

    def psql(self, sql: str, database: str = "postgres",
             check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run one SQL statement with the server's own psql (unaligned rows on stdout)."""
        assert self._bindir is not None, "start() first"
        return subprocess.run(
            [str(self._bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", _PG_USER, "-d", database, "-c", sql],
            check=check, capture_output=True, timeout=30)

    def new_database(self) -> str:
        """A fresh, empty database on this server; returns its URL."""
        self._db_count += 1
        name = f"t{os.getpid()}_{self._db_count}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: don't wait for clients
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def close(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(app: Any, **config: Any) -> Iterator[UvicornThread]:
    server = UvicornThread(app, **config).start()
    try:
        yield server
    finally:
        server.stop()
