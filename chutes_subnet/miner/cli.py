"""``python neurons/miner.py`` / ``chutes-miner``: bittensor-style flags, each also an env var.

Every flag ``--a.b_c`` can be set with ``CHUTES_MINER_A_B_C`` (dots and dashes become
underscores, upper case); a flag on the command line wins over the environment.
``--help`` lists both. The simulated TEE is refused on a non-local network unless
``--allow-insecure-simulated-tee`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any
from urllib.parse import urlparse

from chutes_subnet.configfile import add_config_argument, apply_config_file
from chutes_subnet.inference import DEFAULT_MODEL_ID
from chutes_subnet.logsetup import setup_logging
from chutes_subnet.miner.config import FAULTS, INVOKE_AUTH_MODES, TEE_KINDS, MinerConfig
from chutes_subnet.wallets import DEFAULT_WALLET_PATH

__all__ = ["ENV_PREFIX", "build_parser", "chain_spec", "config_from_args", "is_local_chain", "main"]

ENV_PREFIX = "CHUTES_MINER_"
_TRUE = {"1", "true", "yes", "on"}
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def env_name(flag: str) -> str:
    """``--wallet.name`` -> ``CHUTES_MINER_WALLET_NAME``."""
    return ENV_PREFIX + flag.lstrip("-").replace(".", "_").replace("-", "_").upper()


def _add(parser: argparse.ArgumentParser, flag: str, *, help: str, default: Any = None,
         type: Any = str, choices: Any = None) -> None:
    env = env_name(flag)
    raw = os.environ.get(env)
    if type is bool:
        value = (raw.strip().lower() in _TRUE) if raw is not None else bool(default)
        parser.add_argument(flag, action="store_true", default=value,
                            help=f"{help} [env {env}]")
        return
    if raw is not None:
        try:
            default = type(raw)
        except ValueError:
            raise SystemExit(f"{env}: not a valid {type.__name__}") from None
        if choices is not None and default not in choices:
            raise SystemExit(f"{env} must be one of {list(choices)}")
    shown = "" if default is None else f" (default {default})"
    parser.add_argument(flag, type=type, default=default, choices=choices,
                        help=f"{help}{shown} [env {env}]")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; defaults already include the environment."""
    from chutes_subnet.operator_errors import ArgumentParser

    p = ArgumentParser(
        prog="python neurons/miner.py",
        description="chutes-subnet miner: one attested, end-to-end-encrypted inference "
                    "instance (run one process per GPU or GPU group, inside the TD).")
    _add(p, "--netuid", type=int, default=1, help="subnet uid")
    _add(p, "--wallet.name", default="default", help="wallet (coldkey) name")
    _add(p, "--wallet.hotkey", default="default", help="hotkey name")
    _add(p, "--wallet.path", default=DEFAULT_WALLET_PATH, help="wallets directory")
    _add(p, "--subtensor.network", default="finney",
         help="finney | test | local | ws(s)://endpoint | local:/path/chain.sqlite (dev chain)")
    _add(p, "--subtensor.chain_endpoint", help="subtensor websocket endpoint; overrides "
         "--subtensor.network")
    _add(p, "--axon.ip", default="0.0.0.0", help="address to listen on")  # noqa: S104 - a server
    _add(p, "--axon.port", type=int, default=8091, help="port to listen on and publish")
    _add(p, "--axon.external_ip", help="IP published on chain (required unless --axon.ip is "
         "a specific address)")
    _add(p, "--axon.external_port", type=int, help="port published on chain when a port "
         "mapping differs from --axon.port (default: --axon.port)")
    _add(p, "--axon.no_serve", type=bool, help="do not publish ip:port on chain at start")
    _add(p, "--backend", default="embedded", choices=("embedded", "openai"),
         help="inference backend")
    _add(p, "--backend.url", help="OpenAI-compatible server root inside the TD, e.g. "
         "http://127.0.0.1:8000 (vLLM/SGLang; --backend openai)")
    _add(p, "--backend.model", help="model name the upstream serves (default: --model)")
    _add(p, "--backend.api_key", help="bearer token the upstream requires (prefer the env var)")
    _add(p, "--backend.dangerous_allow_non_loopback", type=bool,
         help="allow a --backend.url that is not on loopback (it sees plaintext: only for an "
              "upstream inside the same TD, e.g. a container network)")
    _add(p, "--backend.seed", type=int, help="weights seed of the embedded model")
    _add(p, "--model", default=DEFAULT_MODEL_ID, help="model id served (names the chute)")
    _add(p, "--tee", default="tdx", choices=TEE_KINDS,
         help="evidence provider: tdx (configfs-tsm + NVIDIA CC) or simulated (INSECURE)")
    _add(p, "--tee.no_gpus", type=bool, help="TDX without NVIDIA GPU evidence")
    _add(p, "--tee.qgs_address", help="quote generation service for kernels without configfs-tsm "
         "(/dev/tdx_guest): vsock:CID:PORT, tcp:HOST:PORT or unix:PATH (default vsock:2:4050)")
    _add(p, "--allow-insecure-simulated-tee", type=bool,
         help="allow --tee simulated on a non-local network (nothing is confidential)")
    _add(p, "--workload.manifest", help="workload manifest JSON of the release served "
         "(required with --backend openai; the embedded model derives its own)")
    _add(p, "--workload.model_dir", help="the upstream engine's model directory: its weights "
         "and tokenizer digests must equal the manifest's")
    # refused (flag or env) by config_from_args: the id is derived from the attested key
    p.add_argument("--instance_id", default=os.environ.get(env_name("--instance_id")),
                   help=argparse.SUPPRESS)
    _add(p, "--fleet.instances", default="",
         help="comma-separated base URLs (http://ip:port) of sibling instances this hotkey "
              "fronts, listed after this one in the signed GET /fleet (siblings run with the "
              "same hotkey and --axon.no_serve)")
    _add(p, "--fleet.ttl", type=int, default=600,
         help="seconds a served instance list is valid (re-signed after half)")
    _add(p, "--fleet.front", help="name of the instance that fronts this hotkey's fleet "
         "(e.g. the pod chutes-miner-0); with --fleet.self, every other instance runs as a "
         "sibling: no axon published, no list")
    _add(p, "--fleet.self", help="this instance's name, compared with --fleet.front (e.g. "
         "the pod name from the downward API)")
    _add(p, "--max_concurrency", type=int, default=4, help="invokes served at once; more get 429")
    _add(p, "--request_timeout", type=float, default=120.0, help="seconds per inference")
    _add(p, "--stream.coalesce_ms", type=float, default=20.0,
         help="padded v2 streams: milliseconds a frame waits for more tokens to share it "
              "(the first token is never held; 0: one token per frame)")
    _add(p, "--min_validator_stake", type=float, default=0.0,
         help="stake a validator needs to be served")
    _add(p, "--metagraph_refresh", type=float, default=60.0,
         help="seconds between metagraph refreshes")
    _add(p, "--invoke_auth", default="validator", choices=INVOKE_AUTH_MODES,
         help="validator: /e2e/invoke needs btauth/1 from a validator; none: open (dev only)")
    _add(p, "--shutdown_grace", type=float, default=30.0,
         help="seconds in-flight streams may finish on shutdown")
    _add(p, "--fault", choices=FAULTS, help="DEV/TEST ONLY (simulated TEE): misbehave on purpose")
    _add(p, "--metrics.port", type=int, default=9092,
         help="port of GET /metrics, apart from the public axon port (0: serve /metrics on "
              "the axon port, readable by anyone who can reach it)")
    _add(p, "--metrics.host", default="127.0.0.1",
         help="address of the metrics port (keep it private; a pod IP for a scraper)")
    _add(p, "--logging.debug", type=bool, help="debug logging (never logs request content)")
    _add(p, "--logging.json", type=bool, help="log JSON lines instead of text")
    _add(p, "--logging.logging_dir", help="also write logs to DIR/miner.log (0600)")
    add_config_argument(p, ENV_PREFIX)
    return p


def chain_spec(args: argparse.Namespace) -> str:
    """The chain to open: the endpoint if given, else the network."""
    return getattr(args, "subtensor.chain_endpoint") or getattr(args, "subtensor.network")


def is_local_chain(spec: str) -> bool:
    """True for the in-process dev chain, the ``local`` network, or a loopback endpoint."""
    if spec.startswith("local:") or spec == "local":
        return True
    if spec.startswith(("ws://", "wss://")):
        return (urlparse(spec).hostname or "") in _LOOPBACK_HOSTS
    return False


def config_from_args(args: argparse.Namespace) -> MinerConfig:
    """A :class:`MinerConfig` from parsed flags; raises ``SystemExit`` (2) on refusals."""
    g = lambda name: getattr(args, name)  # noqa: E731 - dotted attribute names
    if g("instance_id") is not None:
        raise SystemExit("--instance_id is not accepted: the instance id is derived from the "
                         "instance's attested E2EE key (sha256 of the public key)")
    spec = chain_spec(args)
    serve_axon, siblings = not g("axon.no_serve"), g("fleet.instances") or ""
    front, me = g("fleet.front"), g("fleet.self")
    if bool(front) != bool(me):
        raise SystemExit("--fleet.front and --fleet.self go together (one names the front "
                         "instance, the other this one)")
    if front and front != me:  # a sibling: the front publishes the endpoint and the list
        serve_axon, siblings = False, ""
    if g("tee") == "simulated" and not is_local_chain(spec) \
            and not g("allow_insecure_simulated_tee"):
        raise SystemExit("refusing --tee simulated on network "
                         f"{spec!r}: simulated evidence is forgeable; pass "
                         "--allow-insecure-simulated-tee only for a throwaway test network")
    try:
        return MinerConfig(
            host=g("axon.ip"), port=g("axon.port"), external_ip=g("axon.external_ip"),
            external_port=g("axon.external_port"),
            metrics_port=g("metrics.port") or None, metrics_host=g("metrics.host"),
            model_id=g("model"),
            max_concurrency=g("max_concurrency"), request_timeout=g("request_timeout"),
            stream_coalesce_ms=g("stream.coalesce_ms"),
            invoke_auth=g("invoke_auth"), min_validator_stake=g("min_validator_stake"),
            metagraph_refresh=g("metagraph_refresh"), shutdown_grace=g("shutdown_grace"),
            tee=g("tee"), serve_axon=serve_axon, fault=g("fault"),
            workload_manifest=g("workload.manifest"), workload_model_dir=g("workload.model_dir"),
            fleet_instances=tuple(u.strip() for u in siblings.split(",") if u.strip()),
            fleet_ttl=g("fleet.ttl"))
    except ValueError as exc:
        raise SystemExit(f"invalid configuration: {exc}") from None


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "openai":
        if not getattr(args, "backend.url"):
            raise SystemExit("--backend openai needs --backend.url (the OpenAI-compatible server "
                             "inside the TD, e.g. http://127.0.0.1:8000)")
        return {"url": getattr(args, "backend.url"), "model_id": args.model,
                "upstream_model": getattr(args, "backend.model"),
                "api_key": getattr(args, "backend.api_key"),
                "dangerous_allow_non_loopback":
                    getattr(args, "backend.dangerous_allow_non_loopback") or None}
    return {"model_id": args.model, "seed": getattr(args, "backend.seed")}


def main(argv: list[str] | None = None) -> int:
    """Parse flags, then serve until SIGINT/SIGTERM (operator errors: one line, exit 1)."""
    from chutes_subnet.operator_errors import run_command

    return run_command("miner", lambda: _main(argv), argv)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = apply_config_file(parser, parser.parse_args(argv), argv)
    setup_logging(debug=getattr(args, "logging.debug"), json_lines=getattr(args, "logging.json"),
                  logging_dir=getattr(args, "logging.logging_dir"), name="miner")
    config = config_from_args(args)
    if config.invoke_auth == "none" and not is_local_chain(chain_spec(args)):
        logging.getLogger("chutes_subnet.miner").warning(
            "--invoke_auth none on a public network: anyone can use this instance")

    from chutes_subnet.attestation.providers.choose import make_provider
    from chutes_subnet.chain import open_chain
    from chutes_subnet.inference import make_backend
    from chutes_subnet.miner.runner import serve_miner
    from chutes_subnet.wallets import load_wallet

    wallet = load_wallet(getattr(args, "wallet.name"), getattr(args, "wallet.hotkey"),
                         getattr(args, "wallet.path"))
    provider_opts: dict[str, Any] = {}
    if config.tee == "tdx":
        if getattr(args, "tee.no_gpus"):
            provider_opts["gpus"] = False
        if getattr(args, "tee.qgs_address"):
            provider_opts["qgs_address"] = getattr(args, "tee.qgs_address")
    backend_options = _backend_options(args)
    chain = open_chain(chain_spec(args), netuid=args.netuid, wallet=wallet)  # cheap checks first
    try:
        provider = make_provider(config.tee, **provider_opts)
        backend = make_backend(args.backend, **backend_options)
    except BaseException:
        asyncio.run(chain.aclose())
        raise

    async def run() -> None:
        try:
            await serve_miner(config, wallet=wallet, chain=chain, backend=backend,
                              provider=provider)
        finally:
            await chain.aclose()

    asyncio.run(run())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
