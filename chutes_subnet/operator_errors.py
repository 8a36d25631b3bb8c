"""One-line errors for operators: every command-line entry point runs through
:func:`run_command`.

An operator mistake (wrong wallet, unreachable chain, port in use, bad file) ends as
ONE line on stderr, ``<prog>: error: <problem>; <fix>``, and a non-zero exit code.
The traceback is printed only with ``--logging.debug`` (or ``CHUTES_DEBUG=1``).
:func:`describe` turns the exceptions operators cause into that line; anything it
does not recognise is named by its class, never dumped.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from chutes_subnet.errors import ChutesSubnetError, ConfigError

__all__ = ["EXIT_ERROR", "ArgumentParser", "debug_requested", "describe", "fail", "run_command"]

#: Exit status of a command stopped by an operator error (argparse uses 2 for usage).
EXIT_ERROR = 1
_MAX_LINE = 600


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (the usage block is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def fail(message: str) -> NoReturn:
    """Stop the command with ``message`` (one line naming the problem and the fix)."""
    raise ConfigError(message)


def debug_requested(argv: Sequence[str] | None) -> bool:
    """``--logging.debug`` on the command line, or ``CHUTES_DEBUG`` set true."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("CHUTES_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return any(a == "--logging.debug" or a.startswith("--logging.debug=") for a in args)


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_LINE else line[:_MAX_LINE - 1] + "…"


def describe(exc: BaseException) -> str:
    """The operator-facing line for ``exc`` (problem; fix)."""
    import tomllib

    if isinstance(exc, ChutesSubnetError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"TOML syntax error: {exc}; fix the file"
    if isinstance(exc, FileNotFoundError):
        name = exc.filename or str(exc)
        return f"file not found: {name}" if exc.filename else str(exc)
    if isinstance(exc, PermissionError):
        who = f" (running as uid {os.getuid()})" if hasattr(os, "getuid") else ""
        return (f"permission denied: {exc.filename or exc}{who}; make the file readable by "
                f"this user")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return "address already in use: stop the other process or choose another port"
    if isinstance(exc, ValueError):
        return str(exc) or "invalid value"
    return f"{type(exc).__name__}: {exc} (rerun with --logging.debug for the traceback)"


def run_command(prog: str, body: Callable[[], int | None],
                argv: Sequence[str] | None = None) -> int:
    """Run ``body`` and turn an operator error into one line on stderr + exit code 1."""
    debug = debug_requested(argv)
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a refusal raised as SystemExit("message")
            print(f"{prog}: error: {_one_line(exc.code)}", file=sys.stderr)
            return EXIT_ERROR
        raise
    except Exception as exc:  # noqa: BLE001 - the one place any error becomes a line
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(describe(exc))}", file=sys.stderr)
        return EXIT_ERROR
