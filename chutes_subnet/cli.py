"""``chutes-subnet``: the one command-line entry point.

Subcommands (each module registers its own; imports are lazy so ``--help`` is fast)::

    chutes-subnet demo      one-command local subnet: chain, miners, validator, gateway, client
    chutes-subnet gateway   run the E2EE gateway (routes ciphertext only)
    chutes-subnet keys      create / list / revoke gateway API keys; topup-address, balance
    chutes-subnet billing   prepaid balances: credit, buy-plan, report, watch deposits, sweep
    chutes-subnet burn      revenue buy-back-and-burn (dry run unless --submit), audit report
    chutes-subnet localchain  create subnets / register hotkeys on the local dev chain
    chutes-subnet proxy     plaintext OpenAI API on localhost, E2EE upstream
    chutes-subnet scores    print the validator's score table
    chutes-subnet measure   RTMR3 and digests of a workload release (policy authors)
    chutes-subnet chutes    deploy / list / show / history / retire chutes; scale a miner fleet
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "listen_address", "main"]

#: (module, registering function) — each adds its subcommands with ``func(args) -> int``.
_COMMAND_SOURCES = (
    ("chutes_subnet.demo", "add_demo_commands"),
    ("chutes_subnet.gateway.cli", "add_gateway_commands"),
    ("chutes_subnet.client.cli", "add_proxy_commands"),
    ("chutes_subnet.validator.cli", "add_validator_commands"),
    ("chutes_subnet.chain.cli", "add_localchain_commands"),
    ("chutes_subnet.billing.cli", "add_billing_commands"),
    ("chutes_subnet.attestation.measure_cli", "add_measure_commands"),
    ("chutes_subnet.chutes_cli", "add_chutes_commands"),
)


def listen_address(value: str) -> tuple[str, int]:
    """argparse type for ``HOST:PORT`` (IPv6 hosts may be bracketed)."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:8787")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    from chutes_subnet.operator_errors import ArgumentParser

    parser = ArgumentParser(
        prog="chutes-subnet",
        description="Attested, end-to-end-encrypted LLM inference on Bittensor.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module, fn in _COMMAND_SOURCES:
        register: Any = getattr(importlib.import_module(module), fn)
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from chutes_subnet.configfile import apply_command_config
    from chutes_subnet.operator_errors import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)

    def run() -> int:
        return int(args.func(apply_command_config(parser, args, argv)) or 0)

    return run_command(f"chutes-subnet {args.command}", run, argv)


if __name__ == "__main__":
    sys.exit(main())
