"""``serve_miner``: everything one instance needs, from wallet to listening socket.

Start-up order: backend (loads the model) -> evidence provider (fails fast outside a
TD) -> E2EE key pair (in memory) -> metagraph cache (first refresh) -> validator gate
-> app -> publish ``ip:port`` on chain (unless disabled) -> uvicorn. On SIGINT/SIGTERM
uvicorn stops accepting, lets in-flight streams finish for ``shutdown_grace`` seconds,
then the app closes the backend and the metagraph refresher stops.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import uvicorn

from chutes_subnet.attestation import EvidenceProvider, make_provider
from chutes_subnet.auth import MetagraphCache, ValidatorGate
from chutes_subnet.chain import Chain
from chutes_subnet.errors import ChainError
from chutes_subnet.httpserver import server_options
from chutes_subnet.inference import Backend, make_backend
from chutes_subnet.miner.app import create_app
from chutes_subnet.miner.config import MinerConfig
from chutes_subnet.wallets import hotkey_ss58

__all__ = ["serve_miner", "build_provider", "publish_axon"]

log = logging.getLogger("chutes_subnet.miner")


def build_provider(config: MinerConfig, **opts: Any) -> EvidenceProvider:
    """The evidence provider named by ``config.tee`` (raises ``AttestationError``)."""
    return make_provider(config.tee, **opts)


async def publish_axon(chain: Chain, hotkey: str, config: MinerConfig) -> str:
    """Publish ``advertised_ip:port`` for ``hotkey``; returns what was published."""
    ip = config.advertised_ip
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ChainError("the advertised IP must be an IP address (set --axon.external_ip)") \
            from None
    if address.is_unspecified:
        raise ChainError("cannot publish an unspecified address: set --axon.external_ip")
    await chain.serve_axon(hotkey, ip, config.port)
    return f"{ip}:{config.port}"


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
    app = create_app(config, hotkey_ss58=hotkey, backend=backend, provider=provider, gate=gate)
    try:
        if config.serve_axon:
            published = await publish_axon(chain, hotkey, config)
            log.info("published axon %s for hotkey %s on netuid %d", published, hotkey,
                     chain.netuid)
        server = uvicorn.Server(uvicorn.Config(
            app, host=config.host, port=config.port, lifespan="on", log_config=None,
            timeout_graceful_shutdown=int(config.shutdown_grace) or None, **server_options()))
        await server.serve()
    finally:
        await cache.stop()
        await backend.aclose()
