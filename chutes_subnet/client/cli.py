"""``chutes-subnet proxy``: run the local plaintext -> E2EE proxy."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from chutes_subnet.cli import listen_address

__all__ = ["add_proxy_commands", "main"]



def add_proxy_commands(subparsers: Any) -> None:
    """Register ``proxy`` on an argparse subparsers object."""
    p = subparsers.add_parser("proxy", help="plaintext OpenAI API on localhost, E2EE upstream")
    p.add_argument("--listen", type=listen_address, default=("127.0.0.1", 8787),
                   help="HOST:PORT (default 127.0.0.1:8787; keep it on loopback)")
    p.add_argument("--upstream", required=True, help="gateway base URL")
    p.add_argument("--api-key", default=os.environ.get("CHUTES_API_KEY"),
                   help="gateway API key (default $CHUTES_API_KEY; else callers' own bearer)")
    p.add_argument("--v2-only", action="store_true", help="never fall back to protocol v1")
    p.add_argument("--models-ttl", type=float, default=60.0)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run_proxy)


def run_proxy(args: argparse.Namespace) -> int:
    """Serve the proxy until interrupted."""
    import uvicorn

    from chutes_subnet.client.proxy import create_proxy_app

    app = create_proxy_app(args.upstream, api_key=args.api_key, models_ttl=args.models_ttl,
                           versions=(2,) if args.v2_only else (2, 1))
    host, port = args.listen
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=args.log_level,
                                  access_log=False)).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m chutes_subnet.client``)."""
    from chutes_subnet.operator_errors import ArgumentParser, run_command

    parser = ArgumentParser(prog="python -m chutes_subnet.client")
    add_proxy_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command("chutes-subnet proxy", lambda: args.func(args), argv)


if __name__ == "__main__":
    sys.exit(main())
