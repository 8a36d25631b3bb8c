"""The data directory (``$CHUTES_SUBNET_HOME``, default ``~/.chutes-subnet``) and the
SQLite files in it: created private (directory 0700, files 0600).

The files hold API-key hashes, usage, validator state and nonces. SQLite creates its
``-wal`` / ``-shm`` files with the permissions of the database file, so creating the
database file 0600 before SQLite opens it keeps those private too. An existing
directory or file is left as the operator set it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "private_db_path", "private_sqlite_url"]


def data_dir(create: bool = True) -> Path:
    """``$CHUTES_SUBNET_HOME`` or ``~/.chutes-subnet`` (created 0700)."""
    path = Path(os.environ.get("CHUTES_SUBNET_HOME") or Path.home() / ".chutes-subnet")
    if create:
        _private_dir(path)
    return path


def _private_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask


def private_db_path(path: str | Path) -> Path:
    """``path`` with its directory created 0700 and the file created 0600 if missing."""
    path = Path(path).expanduser()
    if str(path) == ":memory:":
        return path
    _private_dir(path.parent)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    return path


def private_sqlite_url(url: str) -> str:
    """For a ``sqlite://PATH`` URL, prepare PATH as :func:`private_db_path`; other URLs
    (memory://, redis://, postgresql://) pass through."""
    if url.startswith("sqlite://") and url[len("sqlite://"):]:
        private_db_path(url[len("sqlite://"):])
    return url
