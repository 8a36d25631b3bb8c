"""``chutes-subnet billing …``, ``chutes-subnet burn …`` and the billing verbs of
``chutes-subnet keys`` (``topup-address``, ``balance``).

Every command opens the gateway's database named by ``--db`` (default
``<data-dir>/gateway.db``, the gateway's own default; ``postgresql://…`` for fleets):
balances live next to the keys and usage they belong to. Errors are one
line on stderr and a non-zero exit status (operator mistakes raise ``ValueError`` /
``ConfigError``, which :func:`~chutes_subnet.operator_errors.run_command` prints as one line); chain commands take ``--network`` or
``--chain-endpoint`` like the neurons.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from typing import Any

__all__ = ["add_billing_commands", "add_key_billing_commands", "default_ledger_url"]

TAO = 10**9


def default_ledger_url() -> str:
    """The gateway's default database, ``<data-dir>/gateway.db``."""
    from chutes_subnet.datadir import data_dir

    return str(data_dir() / "gateway.db")


def _ledger(args: argparse.Namespace) -> Any:
    from chutes_subnet.billing.ledger import Ledger

    return Ledger(args.db or default_ledger_url())


def _tao(rao: int) -> str:
    sign = "-" if rao < 0 else ""
    whole, frac = divmod(abs(rao), TAO)
    return f"{sign}{whole}.{frac:09d} TAO"


def _fail(message: str) -> int:
    """One line on stderr and a non-zero exit (the CLI's operator-error path)."""
    from chutes_subnet.operator_errors import fail

    fail(message)


def _client(args: argparse.Namespace) -> Any:
    import bittensor as bt

    if args.chain_endpoint:
        return bt.Client(args.chain_endpoint, fallback_endpoints=[], archive_endpoints=[])
    return bt.Client(args.network)


def _ledger_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None,
                        help="the gateway's database: SQLite path (default "
                             "<data-dir>/gateway.db) or postgresql://user@host/db")


def _chain_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--network", default="finney", help="bittensor network name")
    parser.add_argument("--chain-endpoint", default=None, help="ws:// or wss:// endpoint")


# --- keys topup-address / keys balance ----------------------------------------------

def add_key_billing_commands(ksub: Any) -> None:
    """Add ``topup-address`` and ``balance`` to the ``keys`` subcommands (they use the
    ``keys --db`` database)."""
    top = ksub.add_parser("topup-address", help="the key's own TAO deposit address")
    top.add_argument("key_id")
    top.add_argument("--seed-file", required=True, help="deposit master seed (64 hex, mode 600)")
    top.set_defaults(func=cmd_topup_address)
    bal = ksub.add_parser("balance", help="the key's prepaid balance and plan")
    bal.add_argument("key_id")
    bal.add_argument("--json", action="store_true")
    bal.set_defaults(func=cmd_balance)


def cmd_topup_address(args: argparse.Namespace) -> int:
    """Print (and record) the key's deposit address."""
    from chutes_subnet.billing.config import load_seed
    from chutes_subnet.billing.deposits import deposit_keypair

    seed = load_seed(args.seed_file)
    ledger = _ledger(args)
    print(ledger.assign_address(args.key_id, deposit_keypair(seed, args.key_id).ss58_address))
    ledger.close()
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    """Print a key's balance, plan and last entries."""
    ledger = _ledger(args)
    admission = ledger.admission(args.key_id)
    sub = ledger.subscription(args.key_id)
    entries = ledger.entries(args.key_id, limit=10)
    ledger.close()
    if args.json:
        print(json.dumps({"key_id": args.key_id, "balance_rao": admission.balance_rao,
                          "plan_tokens_left": admission.plan_tokens_left,
                          "plan": sub.plan_id if sub else None,
                          "can_request": admission.allowed}))
        return 0
    print(f"key {args.key_id}: balance {_tao(admission.balance_rao)} "
          f"({admission.balance_rao} rao); can request: {'yes' if admission.allowed else 'no'}")
    if sub is not None:
        print(f"plan {sub.plan_id}: {admission.plan_tokens_left}/{sub.quota} tokens left this "
              f"{sub.period}; ends {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(sub.expires_at))}")
    for e in entries:
        print(f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(e.created_at))}  {e.kind:<17}"
              f"{e.amount_rao:>18} rao  {e.model or ''}")
    return 0


# --- billing ... ---------------------------------------------------------------------

def add_billing_commands(subparsers: Any) -> None:
    """Register ``billing`` and ``burn``."""
    billing = subparsers.add_parser("billing", help="prepaid balances, plans, deposits")
    bsub = billing.add_subparsers(dest="billing_command", required=True)
    credit = bsub.add_parser("credit", help="credit a key by hand or from a payment webhook "
                                            "(idempotent on --ref)")
    credit.add_argument("key_id")
    credit.add_argument("--rao", type=int, required=True)
    credit.add_argument("--ref", required=True, help="unique id of the payment")
    _ledger_arg(credit)
    credit.set_defaults(func=cmd_credit)
    buy = bsub.add_parser("buy-plan", help="buy a plan for a key from its balance")
    buy.add_argument("key_id")
    buy.add_argument("plan_id")
    buy.add_argument("--plans", required=True, help="plans file (TOML)")
    _ledger_arg(buy)
    buy.set_defaults(func=cmd_buy_plan)
    report = bsub.add_parser("report", help="revenue, deposits, burns")
    report.add_argument("--json", action="store_true")
    _ledger_arg(report)
    report.set_defaults(func=cmd_report)
    watch = bsub.add_parser("watch", help="credit TAO deposits from finalized blocks")
    watch.add_argument("--start-block", type=int, required=True,
                       help="first block to read (used until the watcher has a cursor)")
    watch.add_argument("--confirmations", type=int, default=12)
    watch.add_argument("--interval", type=float, default=12.0, help="seconds between polls")
    watch.add_argument("--once", action="store_true", help="one pass, then exit")
    _chain_args(watch)
    _ledger_arg(watch)
    watch.set_defaults(func=cmd_watch)
    sweep = bsub.add_parser("sweep", help="move deposits to the treasury coldkey")
    sweep.add_argument("--seed-file", required=True)
    sweep.add_argument("--treasury", required=True, help="treasury coldkey ss58")
    sweep.add_argument("--submit", action="store_true", help="really submit (default: dry run)")
    _chain_args(sweep)
    _ledger_arg(sweep)
    sweep.set_defaults(func=cmd_sweep)

    burn = subparsers.add_parser("burn", help="revenue buy-back-and-burn (StakeBurn)")
    usub = burn.add_subparsers(dest="burn_command", required=True)
    run = usub.add_parser("run", help="one burn run (dry run unless --submit)")
    run.add_argument("--netuid", type=int, required=True)
    run.add_argument("--share-bps", type=int, default=10_000,
                     help="basis points of revenue to burn (default 10000 = all)")
    run.add_argument("--threshold-rao", type=int, default=TAO)
    run.add_argument("--limit-price", type=int, default=None, help="rao per alpha")
    run.add_argument("--rate-tolerance", type=float, default=0.02)
    run.add_argument("--dry-run", action="store_true", default=True,
                     help="plan only (the default)")
    run.add_argument("--submit", dest="dry_run", action="store_false",
                     help="sign and submit the burn")
    run.add_argument("--every", type=float, default=None, metavar="SECONDS",
                     help="repeat the run on this schedule until interrupted")
    run.add_argument("--wallet.name", dest="wallet_name", required=True)
    run.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default")
    run.add_argument("--wallet.path", dest="wallet_path", default="~/.bittensor/wallets")
    _chain_args(run)
    _ledger_arg(run)
    run.set_defaults(func=cmd_burn_run)
    audit = usub.add_parser("report", help="the burn audit log")
    _ledger_arg(audit)
    audit.set_defaults(func=cmd_burn_report)


def cmd_credit(args: argparse.Namespace) -> int:
    """Credit ``--rao`` to a key, once per ``--ref``."""
    ledger = _ledger(args)
    try:
        fresh = ledger.credit(args.key_id, args.rao, f"manual:{args.ref}", kind="manual")
    finally:
        ledger.close()
    print("credited" if fresh else f"already credited (ref {args.ref})")
    return 0


def cmd_buy_plan(args: argparse.Namespace) -> int:
    """Buy a plan for a key."""
    from chutes_subnet.billing.config import load_plans
    from chutes_subnet.billing.ledger import InsufficientBalance

    plans = load_plans(args.plans)
    if args.plan_id not in plans:
        return _fail(f"no plan {args.plan_id!r} in {args.plans} (have: {', '.join(plans) or 'none'})")
    ledger = _ledger(args)
    try:
        sub = ledger.buy_plan(args.key_id, plans[args.plan_id], f"cli:{secrets.token_hex(8)}")
    except InsufficientBalance as exc:
        return _fail(f"{exc}: top up first")
    finally:
        ledger.close()
    print(f"plan {sub.plan_id} active until "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(sub.expires_at))}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Totals per entry kind, revenue and burns."""
    from chutes_subnet.billing.treasury import revenue_rao

    ledger = _ledger(args)
    totals, revenue, burned = ledger.totals(), revenue_rao(ledger), ledger.burned_rao()
    ledger.close()
    if args.json:
        print(json.dumps({"totals_rao": totals, "revenue_rao": revenue, "burned_rao": burned}))
        return 0
    for kind in sorted(totals):
        print(f"{kind:<18}{totals[kind]:>22} rao  {_tao(totals[kind])}")
    print(f"{'revenue':<18}{revenue:>22} rao  {_tao(revenue)}")
    print(f"{'burned':<18}{burned:>22} rao  {_tao(burned)}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Run the deposit watcher (``--once`` for one pass)."""
    from chutes_subnet.billing.deposits import DepositWatcher, SdkChainReader

    ledger = _ledger(args)
    watcher = DepositWatcher(ledger, SdkChainReader(_client(args)), start_block=args.start_block,
                             confirmations=args.confirmations)

    async def loop() -> None:
        while True:
            try:
                fresh = await watcher.step()
                cursor = ledger.last_block(watcher.name)
                print(f"block {cursor[0] if cursor else '-'}: {fresh} new deposit(s)", flush=True)
            except (OSError, LookupError, TimeoutError) as exc:
                print(f"watch: {type(exc).__name__}: {exc}; retrying", file=sys.stderr)
            if args.once:
                return
            await asyncio.sleep(args.interval)

    try:
        asyncio.run(loop())
    finally:
        ledger.close()
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Sweep deposit addresses to the treasury."""
    from chutes_subnet.billing.config import load_seed
    from chutes_subnet.billing.treasury import sweep_deposits

    seed = load_seed(args.seed_file)
    ledger = _ledger(args)
    try:
        outcomes = asyncio.run(sweep_deposits(ledger, _client(args), seed, args.treasury,
                                              dry_run=not args.submit))
    finally:
        ledger.close()
    for key_id, outcome in outcomes:
        print(f"{key_id}: {outcome}")
    return 0 if all(not o.startswith(("failed", "refused")) for _, o in outcomes) else 1


def cmd_burn_run(args: argparse.Namespace) -> int:
    """One buy-back-and-burn run."""
    from chutes_subnet.billing.treasury import BurnPolicy, run_burn
    from chutes_subnet.wallets import load_wallet

    policy = BurnPolicy(netuid=args.netuid, share_bps=args.share_bps,
                        threshold_rao=args.threshold_rao, limit_price=args.limit_price,
                        rate_tolerance=args.rate_tolerance)
    wallet = load_wallet(args.wallet_name, args.wallet_hotkey, args.wallet_path)
    ledger, client = _ledger(args), _client(args)

    async def runs() -> str:
        while True:
            out = await run_burn(ledger, client, wallet, policy, dry_run=args.dry_run)
            print(f"{out.outcome}: {out.amount_rao} rao of {out.collected_rao} collected — "
                  f"{out.message}", flush=True)
            if args.every is None:
                return out.outcome
            await asyncio.sleep(max(1.0, args.every))

    try:
        outcome = asyncio.run(runs())
    finally:
        ledger.close()
    return 1 if outcome == "failed" else 0


def cmd_burn_report(args: argparse.Namespace) -> int:
    """Print the burn audit log, newest first."""
    ledger = _ledger(args)
    rows = ledger.burn_audit()
    ledger.close()
    for at, outcome, collected, amount, block, extrinsic, message in rows:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(at))}  {outcome:<16}"
              f"{amount:>16} rao of {collected:>16}  block {block or '-'}  "
              f"{extrinsic or '-'}  {message}")
    return 0
