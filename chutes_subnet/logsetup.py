"""Logging set-up shared by the commands: text or JSON lines, stderr and optionally a
file under ``--logging.logging_dir``.

JSON lines carry ``ts``, ``level``, ``logger`` and ``msg`` (plus ``exc_type`` when an
exception is attached; never its traceback text, which could quote request content).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

__all__ = ["JsonFormatter", "setup_logging"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
        return json.dumps(out, ensure_ascii=False)


def setup_logging(*, debug: bool = False, json_lines: bool = False,
                  logging_dir: str | None = None, name: str = "chutes") -> None:
    """Configure the root logger (replaces handlers a previous call installed)."""
    formatter: logging.Formatter = JsonFormatter() if json_lines else logging.Formatter(
        _TEXT_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if logging_dir:
        directory = Path(logging_dir).expanduser()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / f"{name}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
