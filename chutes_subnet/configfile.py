"""``--config FILE.toml`` for every long-running command (miner, validator, gateway, proxy).

A config file holds the same settings as the flags, named like the flags without the
leading dashes; dotted flags may be written as tables::

    netuid = 64
    [wallet]
    name = "miner"
    hotkey = "default"
    [axon]
    port = 8091

Precedence: a flag on the command line, then the command's environment variable (where
it has them), then the file, then the built-in default. An unknown key, a wrong type
or a TOML syntax error is a :class:`~chutes_subnet.errors.ConfigError` naming the file
and the key.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from chutes_subnet.errors import ConfigError

__all__ = ["add_config_argument", "apply_command_config", "apply_config_file", "flatten"]


def add_config_argument(parser: argparse.ArgumentParser, env_prefix: str | None = None) -> None:
    """Add ``--config PATH`` to ``parser``; ``env_prefix`` names its env vars, if any."""
    parser.add_argument("--config", default=None, metavar="PATH",
                        help="TOML file with any of these settings (flags and env vars win)")
    parser.set_defaults(config_env_prefix=env_prefix)


def _env_name(prefix: str, option: str) -> str:
    return prefix + option.lstrip("-").replace(".", "_").replace("-", "_").upper()


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"wallet": {"name": "x"}}`` -> ``{"wallet.name": "x"}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    found: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse keeps no public list of actions
        for option in action.option_strings:
            if option.startswith("--") and option not in ("--help", "--config"):
                found[option[2:]] = action
                found[option[2:].replace("-", "_")] = action
    return found


def _given(argv: Sequence[str], action: argparse.Action) -> bool:
    return any(token == opt or token.startswith(opt + "=")
               for token in argv for opt in action.option_strings)


def _convert(path: str, key: str, value: Any, action: argparse.Action) -> Any:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"config file {path}: {key} must be true or false")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(value, (dict, list)):
        raise ConfigError(f"config file {path}: {key} must be a single value")
    kind: Callable[[str], Any] = action.type if callable(action.type) else str
    try:
        converted = kind(value if isinstance(value, str) else str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"config file {path}: {key} = {value!r} is invalid ({exc})") from None
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(f"config file {path}: {key} must be one of {list(action.choices)}")
    return converted


def apply_command_config(parser: argparse.ArgumentParser, args: argparse.Namespace,
                         argv: Sequence[str]) -> argparse.Namespace:
    """:func:`apply_config_file` for the subcommand ``args.command`` of ``parser``."""
    choices = parser._subparsers._group_actions[0].choices if parser._subparsers else None
    sub = choices[args.command] if isinstance(choices, Mapping) else parser
    return apply_config_file(sub, args, argv)


def apply_config_file(parser: argparse.ArgumentParser, args: argparse.Namespace,
                      argv: Sequence[str]) -> argparse.Namespace:
    """Fill ``args`` from ``args.config`` where neither a flag nor an env var decided."""
    path = getattr(args, "config", None)
    prefix = getattr(args, "config_env_prefix", None)
    if not path:
        return args
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found: fix --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: TOML syntax error: {exc}") from None
    options = _options(parser)
    for key, value in flatten(data).items():
        action = options.get(key)
        if action is None:
            raise ConfigError(f"config file {path}: unknown setting {key!r} (the settings are "
                              f"the command's flags without '--'; see --help)")
        if _given(argv, action):
            continue
        if prefix and any(os.environ.get(_env_name(prefix, o)) for o in action.option_strings):
            continue
        setattr(args, action.dest, _convert(path, key, value, action))
    return args
