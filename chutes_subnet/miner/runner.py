"""``serve_miner``: everything one instance needs, from wallet to listening socket.

Start-up order: backend (loads the model) -> evidence provider (fails fast outside a
TD) -> E2EE key pair (in memory) -> metagraph cache (first refresh) -> validator gate
-> app -> bind the port (a port in use stops the miner before anything is announced)
-> publish ``ip:port`` on chain (unless disabled, and only when the chain does not
already hold exactly that endpoint) -> uvicorn. On SIGINT/SIGTERM
uvicorn stops accepting, lets in-flight streams finish for ``shutdown_grace`` seconds,
then the app closes the backend and the metagraph refresher stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

import uvicorn

from chutes_subnet.attestation.providers.choose import make_provider
from chutes_subnet.attestation.providers.evidence_provider import EvidenceProvider
from chutes_subnet.auth import MetagraphCache, ValidatorGate, hotkey_signer
from chutes_subnet.chain import Chain
from chutes_subnet.chain.local import format_axon
from chutes_subnet.errors import ChainError
from chutes_subnet.httpserver import bind_listen_socket, server_options
from chutes_subnet.inference import Backend, make_backend
from chutes_subnet.miner.app import create_app, create_metrics_app
from chutes_subnet.miner.config import MinerConfig
from chutes_subnet.wallets import hotkey_ss58

__all__ = ["serve_miner", "build_provider", "publish_axon", "advertised_endpoint"]

log = logging.getLogger("chutes_subnet.miner")


def build_provider(config: MinerConfig, **opts: Any) -> EvidenceProvider:
    """The evidence provider named by ``config.tee`` (raises ``AttestationError``)."""
    return make_provider(config.tee, **opts)


def _is_rate_limited(exc: ChainError) -> bool:
    text = str(exc).lower()
    return "servingratelimit" in text or "rate limit" in text or "ratelimit" in text


def advertised_endpoint(config: MinerConfig) -> tuple[str, int]:
    """The ``(ip, port)`` a miner publishes; ``ChainError`` names the flag to fix."""
    ip = config.advertised_ip
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ChainError("the advertised IP must be an IP address (set --axon.external_ip)") \
            from None
    if address.is_unspecified:
        raise ChainError("cannot publish an unspecified address: set --axon.external_ip to "
                         "the public IP validators reach this miner at (or --axon.ip)")
    return ip, config.external_port or config.port


async def _published(chain: Chain, hotkey: str) -> str | None:
    neuron = (await chain.metagraph()).by_hotkey(hotkey)
    if neuron is None:
        raise ChainError(
            f"hotkey {hotkey} is not registered on netuid {chain.netuid}: register it first "
            f"(btcli subnets register --netuid {chain.netuid}; on a local dev chain: "
            f"chutes-subnet localchain register --netuid {chain.netuid} ...)")
    return neuron.axon


async def publish_axon(chain: Chain, hotkey: str, config: MinerConfig) -> tuple[str, bool]:
    """Make the chain hold ``advertised_ip:port`` for ``hotkey``.

    Returns ``(endpoint, changed)``. ``ServeAxon`` is sent only when the published
    endpoint differs (subtensor rate-limits serving to about one call per 50 blocks,
    so a restarted miner must not re-serve an unchanged endpoint). If the chain
    rate-limits the call but then holds exactly this endpoint, that is success.
    """
    ip, port = advertised_endpoint(config)
    wanted = format_axon(ip, port)
    current = await _published(chain, hotkey)
    if current == wanted:
        return wanted, False
    try:
        await chain.serve_axon(hotkey, ip, port)
    except ChainError as exc:
        if not _is_rate_limited(exc):
            raise
        if await _published(chain, hotkey) == wanted:
            return wanted, False
        raise ChainError(
            f"the chain rate-limits ServeAxon (serving_rate_limit, about 50 blocks): it still "
            f"publishes {current or 'nothing'} instead of {wanted}; restart in ~10 minutes, or "
            f"start with --axon.no_serve to keep the published endpoint") from None
    return wanted, True


async def _serve_with_metrics(server: uvicorn.Server, sock: Any, app: Any,
                              metrics_sock: Any) -> None:
    """The axon server plus ``GET /metrics`` on its own (private) socket; the metrics
    server stops when the axon server does."""
    metrics = uvicorn.Server(uvicorn.Config(create_metrics_app(app.state.miner),
                                            lifespan="off", log_config=None,
                                            **server_options()))
    metrics.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # older uvicorn
    task = asyncio.create_task(metrics.serve(sockets=[metrics_sock]))
    try:
        await server.serve(sockets=[sock])
    finally:
        metrics.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


async def serve_miner(config: MinerConfig, *, wallet: Any, chain: Chain,
                      backend: Backend | None = None,
                      provider: EvidenceProvider | None = None) -> None:
    """Run one miner instance until uvicorn is told to exit."""
    hotkey = hotkey_ss58(wallet)
    backend = backend or make_backend("embedded", model_id=config.model_id)
    provider = provider or build_provider(config)
    cache = MetagraphCache(chain, interval=config.metagraph_refresh)
    await cache.start()
    gate = ValidatorGate(hotkey, cache, min_stake=config.min_validator_stake)
    app = create_app(config, hotkey_ss58=hotkey, backend=backend, provider=provider, gate=gate,
                     fleet_signer=hotkey_signer(wallet), netuid=chain.netuid)
    sock = metrics_sock = None
    try:
        sock = bind_listen_socket(config.host, config.port, flag="--axon.port")
        if config.metrics_port is not None:
            metrics_sock = bind_listen_socket(config.metrics_host, config.metrics_port,
                                              flag="--metrics.port")
        if config.serve_axon:
            endpoint, changed = await publish_axon(chain, hotkey, config)
            log.info("%s axon %s for hotkey %s on netuid %d",
                     "published" if changed else "chain already holds", endpoint, hotkey,
                     chain.netuid)
        server = uvicorn.Server(uvicorn.Config(
            app, lifespan="on", log_config=None,
            timeout_graceful_shutdown=int(config.shutdown_grace) or None, **server_options()))
        if metrics_sock is None:
            await server.serve(sockets=[sock])
        else:
            await _serve_with_metrics(server, sock, app, metrics_sock)
    finally:
        for s in (sock, metrics_sock):
            if s is not None:
                s.close()
        await cache.stop()
        await backend.aclose()
