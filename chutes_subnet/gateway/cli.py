"""``chutes-subnet gateway`` and ``chutes-subnet keys ...`` commands.

The lead's top-level CLI calls :func:`add_gateway_commands`; ``python -m
chutes_subnet.gateway`` runs the same commands standalone. Every subcommand sets
``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

from chutes_subnet.cli import listen_address
from chutes_subnet.configfile import add_config_argument

__all__ = ["add_gateway_commands", "app_from_env", "build_gateway", "default_data_dir", "main"]


#: Intel's Provisioning Certification Service (the validator's default too)
DEFAULT_PCS_URL = "https://api.trustedservices.intel.com"


def default_data_dir() -> Path:
    """``$CHUTES_SUBNET_HOME`` or ``~/.chutes-subnet`` (:func:`chutes_subnet.datadir.data_dir`)."""
    from chutes_subnet.datadir import data_dir

    return data_dir(create=False)


def _db_url(args: argparse.Namespace) -> str:
    """``--db`` as given (a file path, ``sqlite:///path`` or ``postgresql://…``), else
    ``<data-dir>/gateway.db``."""
    from chutes_subnet.datadir import data_dir, private_db_path, private_sqlite_url

    if args.db:
        db = str(args.db)
        if "://" not in db:
            private_db_path(db)
        return private_sqlite_url(db)
    return str(private_db_path(data_dir() / "gateway.db"))


_DB_HELP = ("gateway state (API keys, usage, request journal): a SQLite file path "
            "(default <data-dir>/gateway.db) or postgresql://user@host/db (replicas on "
            "several hosts share one)")



def add_gateway_commands(subparsers: Any) -> None:
    """Register ``gateway`` and ``keys`` on an argparse subparsers object."""
    gw = subparsers.add_parser("gateway", help="run the E2EE gateway (routes ciphertext)")
    gw.add_argument("--listen", type=listen_address, default=("0.0.0.0", 8000),  # noqa: S104 - a server
                    help="HOST:PORT to serve on (default 0.0.0.0:8000)")
    gw.add_argument("--registry", default=None,
                    help="instance registry URL (default sqlite:///<data-dir>/registry.db, "
                         "shared with the validator)")
    gw.add_argument("--nonces", default=None,
                    help="nonce store URL: sqlite:///path (default), redis://host:port/0 "
                         "(several replicas), memory://")
    gw.add_argument("--db", default=None, help=_DB_HELP)
    gw.add_argument("--rate-limits", default=None,
                    help="rate-limit buckets: memory:// (default, per replica) or "
                         "redis://host:port/0 (one limit across every replica)")
    gw.add_argument("--chutes", action="store_true",
                    help="serve only chutes deployed in the chute registry (POST /v1/chutes, "
                         "chutes-subnet chutes deploy); without it every model a miner names "
                         "is an open public chute")
    gw.add_argument("--nonces-per-instance", type=int, default=8)
    gw.add_argument("--max-instances", type=int, default=5)
    gw.add_argument("--discovery-rate", type=float, default=10.0,
                    help="discovery calls per second per API key, for every key")
    gw.add_argument("--discovery-burst", type=int, default=50,
                    help="discovery calls one key may make at once before the rate applies")
    gw.add_argument("--workers", type=int, default=1,
                    help="worker processes sharing the port (needs sqlite:// or redis:// "
                         "stores; rate limits apply per worker unless --rate-limits redis://)")
    gw.add_argument("--wallet.name", dest="wallet_name", default=None,
                    help="validator wallet whose hotkey signs every forward (btauth/1); miners "
                         "in their default mode serve only validator-signed invokes")
    gw.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default")
    gw.add_argument("--wallet.path", dest="wallet_path", default=None,
                    help="wallets directory (default ~/.bittensor/wallets)")
    gw.add_argument("--dangerous-unsigned-forwards", dest="dangerous_unsigned_forwards",
                    action="store_true",
                    help="DEVELOPMENT ONLY: run without --wallet.name; only miners started "
                         "with --invoke_auth none will answer")
    gw.add_argument("--prices", default=None,
                    help="price file (TOML, rao per million tokens per model): turns the "
                         "payment gate on (402 without balance or plan; docs/billing.md)")
    gw.add_argument("--plans", default=None, help="plans for sale (TOML)")
    gw.add_argument("--deposit-seed-file", default=None,
                    help="deposit master seed (64 hex, mode 600): gives every key a TAO "
                         "deposit address")
    gw.add_argument("--collateral.url", dest="collateral_url", default=DEFAULT_PCS_URL,
                    help="PCCS or Intel PCS base URL whose DCAP collateral is cached and served "
                         "to clients at POST /e2e/collateral ('' disables; default Intel PCS)")
    gw.add_argument("--log-level", default="info")
    gw.add_argument("--logging.debug", dest="logging_debug", action="store_true",
                    help="debug logs, and tracebacks with errors")
    gw.add_argument("--logging.json", dest="logging_json", action="store_true",
                    help="log JSON lines instead of text")
    gw.add_argument("--logging.logging_dir", dest="logging_dir", default=None,
                    help="also write logs to DIR/gateway.log (0600)")
    add_config_argument(gw)
    gw.set_defaults(func=run_gateway)

    keys = subparsers.add_parser("keys", help="manage gateway API keys")
    keys.add_argument("--db", default=None, help=_DB_HELP)
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--quota-tokens", type=int, default=None)
    create.add_argument("--rate", type=float, default=None, help="requests per second")
    create.add_argument("--burst", type=int, default=None)
    create.add_argument("--json", action="store_true", help="machine-readable output")
    create.set_defaults(func=keys_create)
    lst = ksub.add_parser("list", help="list keys with their usage")
    lst.set_defaults(func=keys_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=keys_revoke)
    from chutes_subnet.billing.cli import add_key_billing_commands

    add_key_billing_commands(ksub)


def keys_create(args: argparse.Namespace) -> int:
    """Create a key; print the secret once."""
    from chutes_subnet.gateway.state_stores import open_gateway_stores

    stores = open_gateway_stores(_db_url(args))
    try:
        secret, rec = stores.keys.create(args.name, quota_tokens=args.quota_tokens,
                                         rate=args.rate, burst=args.burst)
    finally:
        stores.close()
    if args.json:
        print(json.dumps({"key": secret, "key_id": rec.key_id, "name": rec.name}))
    else:
        print(f"key_id: {rec.key_id}\nkey:    {secret}\n(store it now: only its hash is kept)")
    return 0


def keys_list(args: argparse.Namespace) -> int:
    """Print keys and their metered usage."""
    from chutes_subnet.gateway.state_stores import open_gateway_stores

    stores = open_gateway_stores(_db_url(args))
    try:
        print(f"{'key_id':<14}{'name':<20}{'requests':>10}{'tokens':>12}{'quota':>12}{'rate':>8}")
        for k in stores.keys.list():
            u = stores.usage.totals(k.key_id)
            flag = " (revoked)" if k.revoked else ""
            print(f"{k.key_id:<14}{k.name[:19]:<20}{u.requests:>10}{u.total_tokens:>12}"
                  f"{k.quota_tokens if k.quota_tokens is not None else '-':>12}"
                  f"{k.rate if k.rate is not None else '-':>8}{flag}")
    finally:
        stores.close()
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    """Revoke a key; exit status 1 if unknown."""
    from chutes_subnet.gateway.state_stores import open_gateway_stores

    stores = open_gateway_stores(_db_url(args))
    try:
        found = stores.keys.revoke(args.key_id)
    finally:
        stores.close()
    print("revoked" if found else "no such key")
    return 0 if found else 1


_ENV_ARGS = "CHUTES_GATEWAY_ARGS"


UNSIGNED_REFUSAL = (
    "no --wallet.name: miners (default --invoke_auth validator) refuse unsigned forwards with "
    "401 'btauth/1 malformed', which clients see as AuthenticationError; pass --wallet.name/"
    "--wallet.hotkey of a validator hotkey with a permit (the one your validator runs), or "
    "--dangerous-unsigned-forwards for development miners run with --invoke_auth none")


def _gateway_settings(args: argparse.Namespace) -> dict[str, Any]:
    from chutes_subnet.errors import ConfigError

    if not args.wallet_name and not getattr(args, "dangerous_unsigned_forwards", False):
        raise ConfigError(UNSIGNED_REFUSAL)
    if not (0 < args.discovery_rate < float("inf")) or args.discovery_burst < 1:
        raise ConfigError("--discovery-rate must be > 0 and --discovery-burst >= 1 "
                          "(every key's discovery budget)")
    if args.prices:  # check the operator's billing files now: one line, before serving
        from chutes_subnet.billing.config import load_plans, load_seed
        from chutes_subnet.billing.prices import PriceBook

        PriceBook.load(args.prices)
        if args.plans:
            load_plans(args.plans)
        if args.deposit_seed_file:
            load_seed(args.deposit_seed_file)
    elif args.plans or args.deposit_seed_file:
        raise ConfigError("--plans and --deposit-seed-file need --prices (the payment gate)")
    from chutes_subnet.datadir import data_dir, private_sqlite_url

    data = data_dir()  # created 0700; SQLite files below are created 0600
    return {
        "registry": private_sqlite_url(args.registry or f"sqlite://{data / 'registry.db'}"),
        "nonces": private_sqlite_url(args.nonces or f"sqlite://{data / 'nonces.db'}"),
        "db": _db_url(args),
        "rate_limits": args.rate_limits,
        "chutes": bool(args.chutes),
        "nonces_per_instance": args.nonces_per_instance,
        "max_instances": args.max_instances,
        "discovery_rate": args.discovery_rate,
        "discovery_burst": args.discovery_burst,
        "wallet": [args.wallet_name, args.wallet_hotkey, args.wallet_path] if args.wallet_name else None,
        "billing": None if not args.prices else {
            "prices": args.prices, "plans": args.plans, "seed_file": args.deposit_seed_file},
        "collateral": args.collateral_url or None,
    }


def build_gateway(*, registry: Any, nonces_url: str, db: str, signer: Any = None,
                  rate_limits: str | None = None, billing: dict[str, Any] | None = None,
                  collateral: Any = None, chutes: bool = False,
                  **config: Any) -> tuple[Any, list[Any]]:
    """A gateway app over the keys/usage/journal database ``db`` (a SQLite path or a
    ``postgresql://`` URL), the nonce store at ``nonces_url`` and the rate limiter at
    ``rate_limits`` (``None``: per replica). ``billing`` (``prices``, ``plans``,
    ``seed_file``) turns the payment gate on, its ledger in the same database.
    ``collateral`` is the DCAP collateral source served to clients (or None);
    ``chutes`` turns the chute registry on, in the same database.

    Returns the app and the resources to close. Used by ``chutes-subnet gateway`` and
    by the validator's in-process gateway.
    """
    from chutes_subnet.gateway.app import create_app
    from chutes_subnet.gateway.config import GatewayConfig
    from chutes_subnet.gateway.ratelimit import open_rate_limiter
    from chutes_subnet.gateway.state_stores import open_gateway_stores
    from chutes_subnet.nonces import open_nonce_store

    stores = open_gateway_stores(db)
    nonces = open_nonce_store(nonces_url)
    limiter = open_rate_limiter(rate_limits)
    gate = None
    if billing:
        from chutes_subnet.billing.gate import open_billing

        gate = open_billing(stores.db, **billing)
    chute_store = None
    if chutes:
        from chutes_subnet.registry.chute_store import SQLChuteStore

        chute_store = SQLChuteStore(stores.db)
        if gate is not None:  # deployed chute prices apply where the price file is silent
            from chutes_subnet.billing.gate import chute_registry_prices

            gate.chute_prices = chute_registry_prices(chute_store)
    app = create_app(GatewayConfig(**config), registry=registry, nonce_store=nonces,
                     keys=stores.keys, usage=stores.usage, journal=stores.journal,
                     limiter=limiter, forward_signer=signer, billing=gate,
                     collateral=collateral, chutes=chute_store)
    return app, [nonces, limiter, stores]


def _build(settings: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The gateway app and the resources to close, from JSON-able ``settings``."""
    signer = None
    if settings.get("wallet"):
        from chutes_subnet.auth import forward_signer
        from chutes_subnet.wallets import DEFAULT_WALLET_PATH, load_wallet

        name, hotkey, path = settings["wallet"]
        signer = forward_signer(load_wallet(name, hotkey, path or DEFAULT_WALLET_PATH))
    from chutes_subnet.registry import open_registry

    collateral = None
    if settings.get("collateral"):
        from chutes_subnet.gateway.collateral_cache import PcsCollateralCache

        collateral = PcsCollateralCache(settings["collateral"])
    return build_gateway(registry=open_registry(settings["registry"]), nonces_url=settings["nonces"],
                         db=settings["db"], signer=signer, billing=settings.get("billing"),
                         collateral=collateral,
                         rate_limits=settings.get("rate_limits"),
                         chutes=bool(settings.get("chutes")),
                         nonces_per_instance=settings["nonces_per_instance"],
                         max_instances=settings["max_instances"],
                         discovery_rate=settings.get("discovery_rate", 10.0),
                         discovery_burst=settings.get("discovery_burst", 50))


def app_from_env() -> Any:
    """App factory for ``--workers N`` (uvicorn imports it in every worker)."""
    app, _ = _build(json.loads(os.environ[_ENV_ARGS]))
    _tune_gc()
    return app


#: allocations between young-generation collections (CPython's default: 700)
_GC_GEN0_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Cheaper cyclic GC for a long-running server: the objects built at startup are
    frozen out of every later collection, and the young generation is collected every
    ``_GC_GEN0_THRESHOLD`` allocations rather than 700 (a request's objects are freed by
    reference counting; the collector only finds the rare cycles, a little later)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def run_gateway(args: argparse.Namespace) -> int:
    """Serve the gateway until interrupted."""
    import uvicorn

    from chutes_subnet.httpserver import bind_listen_socket, server_options
    from chutes_subnet.logsetup import setup_logging

    settings = _gateway_settings(args)
    setup_logging(debug=args.logging_debug, json_lines=args.logging_json,
                  logging_dir=args.logging_dir, name="gateway")
    host, port = args.listen
    sock = bind_listen_socket(host, port, flag="--listen")  # port in use: one line, exit 1

    common = {"host": host, "port": port, "log_level": args.log_level, "log_config": None,
              **server_options()}
    if args.workers > 1:
        sock.close()  # uvicorn's supervisor binds it again for its workers
        if "memory://" in (settings["registry"], settings["nonces"]):
            from chutes_subnet.errors import ConfigError

            raise ConfigError("--workers > 1 needs shared stores: give --registry and "
                              "--nonces as sqlite:///path or redis://host:port/0, not memory://")
        os.environ[_ENV_ARGS] = json.dumps(settings)
        uvicorn.run("chutes_subnet.gateway.cli:app_from_env", factory=True,
                    workers=args.workers, **common)
        return 0
    try:
        app, resources = _build(settings)
    except BaseException:
        sock.close()
        raise
    nonces, limiter, stores = resources
    try:
        common.pop("host"), common.pop("port")
        _tune_gc()
        uvicorn.Server(uvicorn.Config(app, lifespan="on", **common)).run(sockets=[sock])
    finally:
        sock.close()
        async def _close() -> None:
            await nonces.aclose()
            await limiter.aclose()

        asyncio.run(_close())
        stores.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m chutes_subnet.gateway``)."""
    from chutes_subnet.operator_errors import ArgumentParser, run_command

    parser = ArgumentParser(prog="python -m chutes_subnet.gateway")
    add_gateway_commands(parser.add_subparsers(dest="command", required=True))
    from chutes_subnet.configfile import apply_command_config

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    return run_command(f"chutes-subnet {args.command}", lambda: args.func(apply_command_config(parser, args, argv)),
                       argv)


if __name__ == "__main__":
    sys.exit(main())
