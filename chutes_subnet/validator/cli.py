"""Command line of the validator: ``neurons/validator.py`` and ``chutes-subnet scores``.

Flags are bittensor-style (``--netuid``, ``--wallet.name``, ``--subtensor.network``,
``--neuron.timeout`` ...). Every flag can also come from the environment as
``CHUTES_VALIDATOR_<FLAG>`` with dots and dashes turned into underscores, e.g.
``CHUTES_VALIDATOR_WALLET_NAME=validator`` or ``CHUTES_VALIDATOR_NEURON_TIMEOUT=20``;
a flag on the command line wins over the environment. Dangerous switches are the
exception: ``--dangerous.accept_simulated_tee`` is read from the command line only,
and is refused unless the chain is a development chain (:func:`is_development_chain`).

The lead's top-level CLI calls :func:`add_validator_commands` (``validator`` and
``scores``); :func:`main` is the ``chutes-validator`` entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = ["ENV_PREFIX", "add_run_arguments", "add_validator_commands", "build_parser",
           "check_dangerous_flags", "is_development_chain", "main", "print_scores",
           "run_validator"]

ENV_PREFIX = "CHUTES_VALIDATOR_"
DEFAULT_PCS_URL = "https://api.trustedservices.intel.com"

log = logging.getLogger("chutes_subnet.validator")


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace(".", "_").replace("-", "_").upper()


def _data_dir() -> Path:
    return Path(os.environ.get("CHUTES_SUBNET_HOME", Path.home() / ".chutes-subnet"))



def is_development_chain(spec: str) -> bool:
    """True for the in-process chain, ``local``, or an endpoint on a loopback or private
    address; False for finney, test, archive and every public endpoint."""
    import ipaddress
    from urllib.parse import urlparse

    from chutes_subnet.miner.cli import is_local_chain

    if is_local_chain(spec):
        return True
    if not spec.startswith(("ws://", "wss://")):
        return False
    host = urlparse(spec).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback


def _add(group: Any, flag: str, *aliases: str, from_env: bool = True, **kw: Any) -> None:
    for name in (flag, *aliases) if from_env else ():
        raw = os.environ.get(_env_name(name))
        if raw is None:
            continue
        if kw.get("action") == "store_true":
            kw["default"] = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            kw["default"] = kw.get("type", str)(raw)
    help_text = kw.get("help", "")
    kw["help"] = f"{help_text} [env {_env_name(flag)}]".strip() if from_env else help_text
    group.add_argument(flag, *aliases, **kw)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of the validator neuron."""
    from chutes_subnet.configfile import add_config_argument

    from .config import BenchmarkConfig, ValidatorConfig

    add_config_argument(parser, ENV_PREFIX)
    d, b = ValidatorConfig(), BenchmarkConfig()
    g = parser.add_argument_group("chain")
    _add(g, "--netuid", type=int, default=1, help="subnet uid")
    _add(g, "--subtensor.network", dest="subtensor_network", default="finney",
         help="bittensor network name (finney, test, local, ...)")
    _add(g, "--subtensor.chain_endpoint", dest="subtensor_chain_endpoint", default=None,
         help="ws(s):// endpoint; overrides --subtensor.network")
    _add(g, "--chain", dest="chain", default=None,
         help="chain spec, e.g. local:/path/chain.sqlite (overrides --subtensor.*)")
    _add(g, "--weights.dry_run", dest="weights_dry_run", action="store_true",
         help="plan weight submissions through the SDK without submitting them")
    _add(g, "--weights.fallback_uid", dest="fallback_uid", type=int, default=0,
         help="uid weighted when no miner passes (0: the subnet owner, i.e. burn; -1: set "
              "nothing)")
    g = parser.add_argument_group("wallet")
    _add(g, "--wallet.name", dest="wallet_name", default="default")
    _add(g, "--wallet.hotkey", dest="wallet_hotkey", default="default")
    _add(g, "--wallet.path", dest="wallet_path", default=os.path.join("~", ".bittensor", "wallets"))
    g = parser.add_argument_group("neuron")
    _add(g, "--neuron.sample_size", dest="sample_size", type=int, default=d.sample_size,
         help="miners per round (0 = all)")
    _add(g, "--neuron.timeout", dest="timeout", type=float, default=d.timeout,
         help="seconds per miner request")
    _add(g, "--neuron.workers", dest="workers", type=int, default=0,
         help="worker processes for attestation verification and reference recomputation "
              "(0 = threads in this process; set it to the cores you can give a large "
              "round)")
    _add(g, "--neuron.concurrency", dest="concurrency", type=int, default=d.concurrency,
         help="miners evaluated at once")
    _add(g, "--fleet.max_instances", dest="fleet_max_instances", type=int,
         default=d.max_instances_per_uid,
         help="instances of one uid's signed list (GET /fleet) evaluated per round")
    _add(g, "--fleet.concurrency", dest="fleet_concurrency", type=int,
         default=d.instance_concurrency,
         help="instances of one uid evaluated at once (within --neuron.concurrency)")
    _add(g, "--neuron.round_blocks", dest="round_blocks", type=int, default=d.round_blocks,
         help="blocks between rounds")
    _add(g, "--neuron.poll_interval", dest="poll_interval", type=float, default=d.poll_interval)
    _add(g, "--neuron.prompts", dest="prompts", type=int, default=b.prompts_per_miner,
         help="benchmark prompts per miner per round")
    _add(g, "--neuron.max_tokens", dest="max_tokens", type=int, default=b.max_tokens)
    _add(g, "--neuron.verify_sample", dest="verify_sample", type=int, default=b.verify_sample)
    _add(g, "--neuron.references", dest="references", default="",
         help="reference models for real chutes: MODEL_ID=DIR[,MODEL_ID=DIR...] (local "
              "model directories; token counting and logprob verification)")
    _add(g, "--neuron.attestation_ttl", dest="attestation_ttl", type=float,
         default=d.attestation_ttl)
    _add(g, "--neuron.version_key", dest="version_key", type=int, default=d.version_key)
    _add(g, "--neuron.rounds", dest="rounds", type=int, default=0,
         help="stop after this many rounds (0 = run forever)")
    _add(g, "--neuron.wait_for_permit", dest="wait_for_permit", type=float, default=0.0,
         help="seconds to wait at start for a validator permit (0 = stop at once without one)")
    g = parser.add_argument_group("attestation")
    _add(g, "--dangerous.accept_simulated_tee", "--dev", "--allow-insecure-simulated-tee",
         dest="dev", action="store_true", from_env=False,
         help="DEVELOPMENT ONLY: accept simulated (forgeable) TEE evidence; command line only "
              "(no environment variable), refused on finney/test/public endpoints")
    _add(g, "--policy.path", dest="policy_path", default=None, help="attestation policy TOML")
    _add(g, "--collateral.url", dest="collateral_url", default=DEFAULT_PCS_URL,
         help="PCCS or Intel PCS base URL")
    _add(g, "--collateral.cache", dest="collateral_cache", default=None,
         help="collateral cache directory")
    _add(g, "--gpu.ocsp", dest="gpu_ocsp", action="store_true",
         help="check GPU certificate revocation online (the default, except with "
              "--dangerous.accept_simulated_tee)")
    _add(g, "--gpu.no_ocsp", dest="gpu_no_ocsp", action="store_true",
         help="do not check GPU certificate revocation online (OCSP is on by default; "
              "verdicts then note the skip)")
    _add(g, "--gpu.ocsp_required", dest="gpu_ocsp_required", action="store_true",
         help="refuse GPUs whose revocation status cannot be established (no reachable "
              "responder and no cached answer); default: accept with a note")
    _add(g, "--gpu.rim_dir", dest="gpu_rim_dir", default=None,
         help="directory of NVIDIA RIM files (*.swidtag): compare GPU measurements with "
              "them; a GPU whose driver/VBIOS has no RIM there is refused")
    _add(g, "--gpu.ocsp_url", dest="gpu_ocsp_url", default="https://ocsp.ndis.nvidia.com/",
         help="OCSP responder for every GPU certificate ('' = each certificate's AIA URL)")
    _add(g, "--gpu.ocsp_cache", dest="gpu_ocsp_cache", default=None,
         help="OCSP response cache directory (default <data-dir>/ocsp)")
    g = parser.add_argument_group("state and observability")
    _add(g, "--state.path", dest="state_path", default=None,
         help="validator state SQLite (default <data-dir>/validator.sqlite)")
    _add(g, "--metrics.port", dest="metrics_port", type=int, default=9101,
         help="port of GET /metrics and /scores (0 = off)")
    _add(g, "--metrics.host", dest="metrics_host", default="127.0.0.1")
    _add(g, "--logging.debug", dest="logging_debug", action="store_true",
         help="debug logs, and tracebacks with errors")
    _add(g, "--logging.json", dest="logging_json", action="store_true",
         help="log JSON lines instead of text")
    _add(g, "--logging.logging_dir", dest="logging_dir", default=None,
         help="also write logs to DIR/validator.log (0600)")
    g = parser.add_argument_group("in-process gateway")
    _add(g, "--gateway.port", dest="gateway_port", type=int, default=0,
         help="serve the E2EE gateway in this process on this port (0 = off)")
    _add(g, "--gateway.host", dest="gateway_host", default="0.0.0.0")  # noqa: S104 - a server
    _add(g, "--gateway.db", dest="gateway_db", default=None,
         help="gateway keys, usage and journal: a SQLite path (default "
              "<data-dir>/gateway.db) or postgresql://user@host/db")
    _add(g, "--gateway.rate_limits", dest="gateway_rate_limits", default=None,
         help="gateway rate-limit buckets: memory:// (default) or redis://host:port/0")
    _add(g, "--gateway.registry", dest="gateway_registry", default=None,
         help="instance registry the validator publishes to: sqlite:///path, "
              "postgresql://user@host/db (gateway fleets), memory:// or none "
              "(default sqlite:///<data-dir>/registry.db)")
    _add(g, "--gateway.chutes", dest="gateway_chutes", action="store_true",
         help="chute registry in the gateway's database: only deployed chutes are "
              "discovered, attested and scored, and each chute's supply multiplier "
              "scales the score of the miners serving it")
    _add(g, "--gateway.nonces", dest="gateway_nonces", default=None,
         help="gateway nonce store URL (default sqlite:///<data-dir>/nonces.db)")
    _add(g, "--scoring.organic_weight", dest="organic_weight", type=float, default=0.0,
         help="share of a miner's round score from organic gateway traffic (needs "
              "--gateway.port; 0 = benchmark only)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``neurons/validator.py``."""
    from chutes_subnet.operator_errors import ArgumentParser

    parser = ArgumentParser(prog="validator", description="chutes-subnet validator",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_arguments(parser)
    return parser


def check_dangerous_flags(args: argparse.Namespace) -> str | None:
    """Why the dangerous flags cannot be honoured here (None: they can)."""
    spec = args.chain or args.subtensor_chain_endpoint or args.subtensor_network
    if args.dev and not is_development_chain(spec):
        return (f"refusing --dangerous.accept_simulated_tee on network {spec!r}: simulated "
                "evidence is forgeable; it is accepted only on a local or private devnet")
    for name in ("DEV", "ALLOW_INSECURE_SIMULATED_TEE", "DANGEROUS_ACCEPT_SIMULATED_TEE"):
        if os.environ.get(ENV_PREFIX + name):
            log.warning("%s%s is ignored: dangerous switches are command-line flags only",
                        ENV_PREFIX, name)
    return None


def _config(args: argparse.Namespace) -> Any:
    from .config import BenchmarkConfig, ScoringConfig, ValidatorConfig

    bench = BenchmarkConfig(prompts_per_miner=args.prompts, max_tokens=args.max_tokens,
                            verify_sample=min(args.verify_sample, args.prompts))
    return ValidatorConfig(
        sample_size=args.sample_size, concurrency=args.concurrency, timeout=args.timeout,
        dangerous_accept_simulated_tee=args.dev, attestation_ttl=args.attestation_ttl,
        round_blocks=args.round_blocks, poll_interval=args.poll_interval,
        version_key=args.version_key, benchmark=bench,
        fallback_uid=None if args.fallback_uid < 0 else args.fallback_uid,
        max_instances_per_uid=args.fleet_max_instances,
        instance_concurrency=args.fleet_concurrency,
        scoring=ScoringConfig(organic_weight=args.organic_weight))


def _verifier(args: argparse.Namespace) -> Any:
    from chutes_subnet.attestation.fetch.ocsp_client import GpuOnlineChecker
    from chutes_subnet.attestation.fetch.pccs import PccsCollateralSource
    from chutes_subnet.attestation.verify.policy import Policy
    from chutes_subnet.attestation.verify.rim import RimStore
    from chutes_subnet.attestation.verify.verifier import Verifier

    policy = Policy.load(args.policy_path) if args.policy_path else Policy.default()
    if args.dev:
        policy = policy.with_simulated()
        if not policy.manifests:
            log.warning("development mode: no published workload manifests; measured "
                        "workloads are replayed and checked but need not be published")
            policy = replace(policy, workload_required=False)
    cache = args.collateral_cache or str(_data_dir() / "collateral")
    collateral = PccsCollateralSource(args.collateral_url, cache) if args.collateral_url else None
    gpu_online = None
    # on by default; a development validator (simulated GPUs NVIDIA never issued) asks
    # only when --gpu.ocsp is given
    if not args.gpu_no_ocsp and (args.gpu_ocsp or not args.dev):
        gpu_online = GpuOnlineChecker(args.gpu_ocsp_cache or str(_data_dir() / "ocsp"),
                                      url=args.gpu_ocsp_url or None)
    rims = RimStore.from_dir(args.gpu_rim_dir) if args.gpu_rim_dir else None
    return Verifier(policy, collateral, dangerous_accept_simulated_tee=args.dev,
                    gpu_online=gpu_online, rims=rims,
                    require_revocation=args.gpu_ocsp_required and gpu_online is not None)


def _registry(args: argparse.Namespace) -> Any:
    from chutes_subnet.registry import open_registry

    url = args.gateway_registry or f"sqlite://{_data_dir() / 'registry.db'}"
    if url == "none":
        return None
    from chutes_subnet.datadir import private_sqlite_url

    return open_registry(private_sqlite_url(url))


def _gateway_app(args: argparse.Namespace, registry: Any, wallet: Any) -> tuple[Any, list[Any]]:
    from chutes_subnet.auth import forward_signer
    from chutes_subnet.datadir import data_dir, private_db_path, private_sqlite_url
    from chutes_subnet.gateway.cli import build_gateway
    from chutes_subnet.gateway.collateral_cache import PcsCollateralCache

    data = data_dir()  # created 0700; SQLite files below are created 0600
    collateral = PcsCollateralCache(args.collateral_url) if args.collateral_url else None
    db = args.gateway_db or str(data / "gateway.db")
    if "://" not in db:
        private_db_path(db)
    return build_gateway(registry=registry,
                         nonces_url=private_sqlite_url(
                             args.gateway_nonces or f"sqlite://{data / 'nonces.db'}"),
                         db=private_sqlite_url(db),
                         rate_limits=args.gateway_rate_limits,
                         chutes=bool(getattr(args, "gateway_chutes", False)),
                         signer=forward_signer(wallet), collateral=collateral)


async def _serve(app: Any, host: str, port: int, flag: str) -> tuple[Any, asyncio.Task[None]]:
    import uvicorn

    from chutes_subnet.httpserver import bind_listen_socket, server_options

    sock = bind_listen_socket(host, port, flag=flag)  # port in use: one-line ConfigError
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           **server_options()))
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # older uvicorn
    task = asyncio.create_task(server.serve(sockets=[sock]))
    task.add_done_callback(lambda _t: sock.close())
    return server, task


async def _run(args: argparse.Namespace) -> int:
    from chutes_subnet.chain import open_chain
    from chutes_subnet.errors import ConfigError
    from chutes_subnet.wallets import hotkey_ss58, load_wallet

    from .preflight import check_validator

    # Cheap checks first (flags, wallet, files, chain, permit), heavy imports after.
    refusal = check_dangerous_flags(args)
    if refusal:
        print(f"validator: error: {refusal}", file=sys.stderr)
        return 2
    config = _config(args)
    wallet = load_wallet(args.wallet_name, args.wallet_hotkey, args.wallet_path)
    spec = args.chain or args.subtensor_chain_endpoint or args.subtensor_network
    chain = open_chain(spec, netuid=args.netuid, wallet=wallet, dry_run=args.weights_dry_run)
    try:
        verifier = _verifier(args)
        await check_validator(chain, hotkey_ss58(wallet), wait_for_permit=args.wait_for_permit)
    except BaseException:
        await chain.aclose()
        raise

    from chutes_subnet.datadir import data_dir, private_db_path

    from .metrics import ValidatorMetrics, create_metrics_app
    from .neuron import Validator
    from .state import ValidatorState

    state = ValidatorState(private_db_path(args.state_path or data_dir() / "validator.sqlite"))
    registry = _registry(args)
    metrics = ValidatorMetrics()
    from .reference import ReferenceBook

    references = ReferenceBook.from_spec(args.references)
    pool = None
    if args.workers > 0:
        import functools

        from .workers import WorkerPool

        pool = WorkerPool(args.workers, functools.partial(_verifier, args))
    validator = Validator(config, chain=chain, wallet=wallet, verifier=verifier,
                          state=state, registry=registry, metrics=metrics,
                          references=references, pool=pool)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    servers: list[tuple[Any, asyncio.Task[None]]] = []
    resources: list[Any] = []
    try:
        if args.metrics_port:
            app = create_metrics_app(metrics, validator.score_table)
            servers.append(await _serve(app, args.metrics_host, args.metrics_port,
                                        "--metrics.port"))
        if args.gateway_port:
            if registry is None:
                raise ConfigError("--gateway.port needs an instance registry: drop "
                                  "--gateway.registry none or give sqlite:///path")
            app, resources = _gateway_app(args, registry, wallet)
            servers.append(await _serve(app, args.gateway_host, args.gateway_port,
                                        "--gateway.port"))
            validator.use_gateway(app.state.gateway)  # benchmarks on the organic path
            gateway = app.state.gateway
            if gateway.chutes is not None:
                from chutes_subnet.gateway.chute_api import chute_targets

                validator.chutes = gateway.chutes
                validator.supply = lambda: chute_targets(gateway)
                # the workload check accepts exactly the manifests owners deployed
                validator.attestor.verifier.manifests = gateway.chutes
            if config.scoring.organic_weight > 0:
                from .organic import GatewayOrganicSource

                validator.organic = GatewayOrganicSource(app.state.gateway, validator.published)
        log.info("validator %s on netuid %d (%s)%s", validator.hotkey, args.netuid, spec,
                 " [DEVELOPMENT MODE: simulated TEE accepted]" if args.dev else "")
        if args.rounds:
            for _ in range(args.rounds):
                if stop.is_set():
                    break
                await validator.run_round()
        else:
            await validator.run(stop)
    finally:
        for server, task in servers:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        for res in resources:
            close = getattr(res, "aclose", None) or res.close
            with contextlib.suppress(Exception):
                out = close()
                if asyncio.iscoroutine(out):
                    await out
        await validator.aclose()
        if pool is not None:
            pool.close()
        await chain.aclose()
    return 0


def run_validator(args: argparse.Namespace) -> int:
    """Run the validator neuron until interrupted (or ``--neuron.rounds`` rounds)."""
    from chutes_subnet.logsetup import setup_logging

    setup_logging(debug=args.logging_debug, json_lines=args.logging_json,
                  logging_dir=args.logging_dir, name="validator")
    return asyncio.run(_run(args))


def print_scores(args: argparse.Namespace) -> int:
    """Print the committed score table of a (possibly running) validator."""
    from chutes_subnet.errors import ConfigError

    from .state import ValidatorState, ValidatorStateError
    from .table import build_score_table, format_score_table, score_table_json

    path = Path(args.state_path or _data_dir() / "validator.sqlite")
    if not path.is_file():
        raise ConfigError(f"no validator state at {path}: the validator has not finished a "
                          "round there yet; pass the validator's --state.path")
    try:
        state = ValidatorState(path)
        snapshot = state.load()
        state.close()
    except ValidatorStateError as exc:
        raise ConfigError(f"{exc} ({path})") from None
    rows = build_score_table(snapshot)
    if args.json:
        print(score_table_json(rows))
    else:
        print(format_score_table(rows, round_index=snapshot.round_index))
    return 0


def _add_scores_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state.path", dest="state_path", default=None,
                        help="validator state SQLite (default <data-dir>/validator.sqlite)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_validator_commands(subparsers: Any) -> None:
    """Register ``validator`` (run the neuron) and ``scores`` (print the table)."""
    run = subparsers.add_parser("validator", help="run the validator neuron",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_arguments(run)
    run.set_defaults(func=run_validator)
    scores = subparsers.add_parser("scores", help="print the validator's score table")
    _add_scores_arguments(scores)
    scores.set_defaults(func=print_scores)


def main(argv: list[str] | None = None) -> int:
    """``chutes-validator`` / ``neurons/validator.py``: run the neuron; ``scores`` prints."""
    from chutes_subnet.operator_errors import ArgumentParser, run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["scores"]:
        parser = ArgumentParser(prog="validator scores")
        _add_scores_arguments(parser)
        args = parser.parse_args(argv[1:])
        return run_command("validator scores", lambda: print_scores(args), argv)
    def run() -> int:
        from chutes_subnet.configfile import apply_config_file

        parser = build_parser()
        return run_validator(apply_config_file(parser, parser.parse_args(argv), argv))

    return run_command("validator", run, argv)
