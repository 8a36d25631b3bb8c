"""``chutes-subnet proxy`` (the local plaintext -> E2EE proxy) and ``chutes-subnet verify``
(challenge every instance of a model through the gateway and print the verdict tree).

Both verify instances themselves by default, with the packaged client policy or
``--policy FILE``; ``--dangerous-accept-simulated-tee`` adds the simulated TD's
profile for local development, ``--dangerous-trust-gateway`` (proxy only) skips
verification. v1 needs ``--allow-v1``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from chutes_subnet.cli import listen_address
from chutes_subnet.configfile import add_config_argument

__all__ = ["add_proxy_commands", "check_upstream", "main", "run_verify", "upstream_url"]


def upstream_url(value: str) -> str:
    """argparse type for ``--upstream``: an http(s) base URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a URL: give the gateway's base URL with its scheme, e.g. "
            f"https://{value.strip() or 'gateway.example'}")
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError("the gateway URL must not carry a query or fragment")
    return value.strip().rstrip("/")


def check_upstream(base: str, *, timeout: float = 10.0) -> None:
    """Fail with one line when the gateway at ``base`` cannot be reached at all."""
    import httpx

    from chutes_subnet.errors import ConfigError

    try:
        httpx.get(f"{base}/v1/models", timeout=timeout, follow_redirects=False,
                  trust_env=False)
    except httpx.TransportError as exc:
        raise ConfigError(
            f"gateway {base} is unreachable ({type(exc).__name__}): check --upstream and that "
            f"the gateway runs (or pass --skip-upstream-check to start anyway)") from None


def _add_trust_flags(p: Any) -> None:
    p.add_argument("--policy", default=None,
                   help="client policy TOML (default: the packaged policy, which allowlists "
                        "no measurement profile and so fails closed)")
    p.add_argument("--allow-v1", action="store_true",
                   help="also accept E2EE v1 (no stream integrity); default is v2 only")
    p.add_argument("--dangerous-accept-simulated-tee", action="store_true",
                   help="DEVELOPMENT ONLY: accept forgeable simulated TEE evidence")
    p.add_argument("--dev-gpus", type=int, default=8,
                   help="GPUs of the simulated TD (with --dangerous-accept-simulated-tee)")


def _policy(args: argparse.Namespace) -> Any:
    from chutes_subnet.client.client_policy import ClientPolicy

    if args.dangerous_accept_simulated_tee:
        if args.policy:
            raise SystemExit("--policy and --dangerous-accept-simulated-tee are exclusive")
        return ClientPolicy.development(gpu_count=args.dev_gpus,
                                        dangerous_accept_simulated_tee=True)
    return ClientPolicy.load(args.policy) if args.policy else ClientPolicy.default()


def add_proxy_commands(subparsers: Any) -> None:
    """Register ``proxy`` and ``verify`` on an argparse subparsers object."""
    p = subparsers.add_parser("proxy", help="plaintext OpenAI API on localhost, E2EE upstream")
    p.add_argument("--listen", type=listen_address, default=("127.0.0.1", 8787),
                   help="HOST:PORT (default 127.0.0.1:8787; keep it on loopback)")
    p.add_argument("--upstream", type=upstream_url,
                   help="gateway base URL, e.g. https://gateway.example")
    p.add_argument("--skip-upstream-check", action="store_true",
                   help="start even if the gateway does not answer yet")
    p.add_argument("--api-key", default=os.environ.get("CHUTES_API_KEY"),
                   help="gateway API key (default $CHUTES_API_KEY; else callers' own bearer)")
    p.add_argument("--allow-host", action="append", default=[],
                   help="extra Host name callers may use (e.g. a container name); "
                        "loopback names are always allowed")
    p.add_argument("--dangerous-trust-gateway", action="store_true",
                   help="skip attestation verification and trust the gateway's keys")
    _add_trust_flags(p)
    p.add_argument("--models-ttl", type=float, default=60.0)
    p.add_argument("--log-level", default="info")
    p.add_argument("--logging.debug", dest="logging_debug", action="store_true",
                   help="debug logs, and tracebacks with errors")
    p.add_argument("--logging.json", dest="logging_json", action="store_true",
                   help="log JSON lines instead of text")
    p.add_argument("--logging.logging_dir", dest="logging_dir", default=None,
                   help="also write logs to DIR/proxy.log (0600)")
    add_config_argument(p)
    p.set_defaults(func=run_proxy)

    v = subparsers.add_parser("verify", help="verify a model's instances through the gateway")
    v.add_argument("--model", required=True, help="model name (or chute id)")
    v.add_argument("--gateway", default=os.environ.get("CHUTES_GATEWAY_URL"), required=False,
                   help="gateway base URL (default $CHUTES_GATEWAY_URL)")
    v.add_argument("--api-key", default=os.environ.get("CHUTES_API_KEY"),
                   help="gateway API key (default $CHUTES_API_KEY)")
    v.add_argument("--json", action="store_true", help="one JSON document instead of the tree")
    v.add_argument("--timeout", type=float, default=60.0)
    _add_trust_flags(v)
    v.set_defaults(func=run_verify)


def run_proxy(args: argparse.Namespace) -> int:
    """Serve the proxy until interrupted."""
    import uvicorn

    from chutes_subnet.client.proxy import create_proxy_app
    from chutes_subnet.errors import ConfigError
    from chutes_subnet.httpserver import bind_listen_socket
    from chutes_subnet.logsetup import setup_logging

    if not args.upstream:
        raise ConfigError("no gateway: pass --upstream https://gateway.example (or upstream = "
                          "in the --config file)")
    setup_logging(debug=args.logging_debug, json_lines=args.logging_json,
                  logging_dir=args.logging_dir, name="proxy")
    host, port = args.listen
    trust = args.dangerous_trust_gateway
    policy = None if trust else _policy(args)
    sock = bind_listen_socket(host, port, flag="--listen")  # port in use: one line, exit 1
    try:
        if not args.skip_upstream_check:
            check_upstream(args.upstream)
        app = create_proxy_app(args.upstream, api_key=args.api_key, models_ttl=args.models_ttl,
                               versions=(2, 1) if args.allow_v1 else (2,),
                               verify="gateway" if trust else "full", policy=policy,
                               port=port, allowed_hosts=args.allow_host)
        uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False,
                                      log_config=None)).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Print the verdict of every instance; exit 0 iff at least one verified."""
    from chutes_subnet.client.check import verify_model

    if not args.gateway or not args.api_key:
        print("verify needs --gateway URL and --api-key KEY", file=sys.stderr)
        return 2
    try:
        verdicts = verify_model(args.gateway, args.api_key, args.model, policy=_policy(args),
                                allow_v1=args.allow_v1, timeout=args.timeout)
    except Exception as exc:  # noqa: BLE001 - one clear line for any failure
        print(f"verify: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"model": args.model, "instances": [v.to_dict() for v in verdicts]}))
    else:
        print(f"model {args.model}: {sum(v.ok for v in verdicts)}/{len(verdicts)} "
              "instance(s) verified")
        for v in verdicts:
            print("\n".join(v.tree()))
    return 0 if any(v.ok for v in verdicts) else 1


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m chutes_subnet.client``)."""
    from chutes_subnet.operator_errors import ArgumentParser, run_command

    parser = ArgumentParser(prog="python -m chutes_subnet.client")
    add_proxy_commands(parser.add_subparsers(dest="command", required=True))
    from chutes_subnet.configfile import apply_command_config

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    return run_command(f"chutes-subnet {args.command}",
                       lambda: args.func(apply_command_config(parser, args, argv)), argv)


if __name__ == "__main__":
    sys.exit(main())
