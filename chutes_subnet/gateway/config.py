"""Gateway settings (a plain dataclass; the CLI fills it from flags)."""

from __future__ import annotations

from dataclasses import dataclass

from chutes_subnet.wire.protocol import (
    MAX_ENVELOPE_BYTES,
    NONCE_TTL_CLIENT_SECONDS,
    NONCE_TTL_SERVER_SECONDS,
)

__all__ = ["GatewayConfig"]


@dataclass(frozen=True)
class GatewayConfig:
    """Tunables of one gateway replica."""

    #: nonces handed out per instance in one discovery answer
    nonces_per_instance: int = 8
    #: at most this many instances are offered per discovery answer
    max_instances: int = 5
    #: lifetime of a nonce in the store, and the lifetime told to clients (shorter)
    nonce_ttl_server: float = NONCE_TTL_SERVER_SECONDS
    nonce_ttl_client: int = NONCE_TTL_CLIENT_SECONDS
    #: live (unconsumed, unexpired) nonces one API key may hold per replica; discovery
    #: beyond it answers 429 nonce_budget (100 full discovery answers at the defaults)
    max_live_nonces_per_key: int = 4000
    #: largest request envelope accepted (bytes)
    max_body_bytes: int = MAX_ENVELOPE_BYTES
    #: seconds a client may take to send its request body (slow bodies get 408)
    body_timeout: float = 30.0
    #: largest error body relayed from a miner (bytes)
    max_error_body_bytes: int = 64 * 1024
    #: timeouts towards miners (seconds): TCP connect, and silence between two reads
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    #: seconds an instance is skipped in discovery after failing before any byte
    failure_cooldown: float = 10.0
    #: pooled keep-alive connections towards miners
    upstream_connections: int = 512
    #: seconds between usage-meter flushes to disk
    usage_flush_interval: float = 1.0
    #: client challenges relayed to miners (``POST /e2e/attest/{id}``): per-key rate
    #: (per second) and burst, relays in flight per instance, and the relay timeout
    attest_rate: float = 1.0
    attest_burst: int = 10
    attest_per_instance: int = 2
    attest_timeout: float = 30.0
    #: discovery (``GET /e2e/instances/{chute}``): per-key rate (per second) and burst,
    #: for every key, also one created without ``--rate`` (each answer issues nonces)
    discovery_rate: float = 10.0
    discovery_burst: int = 50
    #: requests one instance serves at once, assumed when planning chute targets
    #: (the miner's default ``max_concurrency``)
    instance_capacity: int = 4
