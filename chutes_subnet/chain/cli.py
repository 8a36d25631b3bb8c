"""``chutes-subnet localchain``: administer the SQLite development chain.

The neurons open ``--subtensor.network local:/path/chain.sqlite`` but never create
subnets or registrations on it (as on subtensor, that is the operator's job)::

    chutes-subnet localchain create-subnet --chain local:/tmp/chain.sqlite --netuid 1
    chutes-subnet localchain register --chain local:/tmp/chain.sqlite --netuid 1 \\
        --wallet.name miner --wallet.hotkey default
    chutes-subnet localchain register ... --wallet.name validator --stake 1000 --validator-permit
    chutes-subnet localchain show --chain local:/tmp/chain.sqlite --netuid 1
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

__all__ = ["add_localchain_commands"]


def _chain_path(value: str) -> str:
    if not value.startswith("local:") or not value[len("local:"):] \
            or value == "local::memory:":
        raise argparse.ArgumentTypeError("expected local:/path/chain.sqlite")
    return value[len("local:"):]


def add_localchain_commands(subparsers: Any) -> None:
    """Register ``localchain create-subnet | register | show``."""
    top = subparsers.add_parser("localchain", help="create subnets and register hotkeys on the "
                                "local development chain (local:/path/chain.sqlite)")
    sub = top.add_subparsers(dest="localchain_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--chain", type=_chain_path, required=True,
                       help="local:/path/chain.sqlite (the file the neurons open)")
        p.add_argument("--netuid", type=int, default=1, help="subnet uid (default 1)")

    create = sub.add_parser("create-subnet", help="create a subnet (idempotent)")
    common(create)
    create.add_argument("--block-time", type=float, default=None,
                        help="seconds per block (default: keep, 12 for a new chain)")
    create.add_argument("--weights-rate-limit", type=int, default=None,
                        help="blocks between two weight submissions (default: keep, 100)")
    create.set_defaults(func=_create_subnet)

    reg = sub.add_parser("register", help="register a wallet's hotkey on a subnet")
    common(reg)
    reg.add_argument("--wallet.name", dest="wallet_name", required=True)
    reg.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default")
    reg.add_argument("--wallet.path", dest="wallet_path", default=None,
                     help="wallets directory (default ~/.bittensor/wallets)")
    reg.add_argument("--stake", type=float, default=0.0, help="stake in alpha (default 0)")
    reg.add_argument("--validator-permit", action="store_true",
                     help="grant a validator permit (validators need one to set weights)")
    reg.add_argument("--create-wallet", action="store_true",
                     help="create missing keys first (UNENCRYPTED; development only)")
    reg.set_defaults(func=_register)

    show = sub.add_parser("show", help="print the subnet's neurons")
    common(show)
    show.set_defaults(func=_show)


def _create_subnet(args: argparse.Namespace) -> int:
    from .local import LocalChain

    chain = LocalChain(args.chain, netuid=args.netuid, block_time=args.block_time,
                       weights_rate_limit=args.weights_rate_limit, create=True)
    chain.close()
    print(f"subnet {args.netuid} ready on local:{args.chain}")
    return 0


def _register(args: argparse.Namespace) -> int:
    from chutes_subnet.wallets import (
        DEFAULT_WALLET_PATH,
        coldkey_ss58,
        ensure_dev_wallet,
        hotkey_ss58,
        load_wallet,
    )

    from .local import LocalChain

    path = args.wallet_path or DEFAULT_WALLET_PATH
    load = ensure_dev_wallet if args.create_wallet else load_wallet
    wallet = load(args.wallet_name, args.wallet_hotkey, path)
    chain = LocalChain(args.chain, netuid=args.netuid)
    try:
        uid = chain.register(hotkey_ss58(wallet), coldkey_ss58(wallet), stake=args.stake,
                             validator_permit=args.validator_permit)
    finally:
        chain.close()
    permit = ", validator permit" if args.validator_permit else ""
    print(f"uid {uid}: {hotkey_ss58(wallet)} (wallet {args.wallet_name}/{args.wallet_hotkey}, "
          f"stake {args.stake:g}{permit}) on netuid {args.netuid}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from .local import LocalChain

    chain = LocalChain(args.chain, netuid=args.netuid)
    try:
        graph = asyncio.run(chain.metagraph())
    finally:
        chain.close()
    print(f"netuid {graph.netuid} at block {graph.block}: {len(graph.neurons)} neurons")
    print(f"{'uid':>4}  {'hotkey':<49} {'stake':>10} {'permit':>6}  axon")
    for n in graph.neurons:
        print(f"{n.uid:>4}  {n.hotkey:<49} {n.stake:>10g} {'yes' if n.validator_permit else '-':>6}"
              f"  {n.axon or '-'}")
    return 0
