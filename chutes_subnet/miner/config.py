"""Settings of one miner instance (a frozen dataclass; the CLI fills it from flags/env).

Validation happens at construction, so a misconfigured miner fails at start, not at
its first request. Development-only switches (``fault``,
``dangerous_plaintext_endpoint``) are refused here unless ``tee == "simulated"``;
:func:`chutes_subnet.miner.app.create_app` checks again against the provider it is
actually given, so a real TEE can never serve them.
"""

from __future__ import annotations

from dataclasses import dataclass

from chutes_subnet import inference
from chutes_subnet.wire import protocol

__all__ = ["FAULTS", "INVOKE_AUTH_MODES", "TEE_KINDS", "MinerConfig"]

#: Deliberate misbehaviours for validator tests (simulated TEE only).
FAULTS = ("wrong-tokens", "stall", "debug-quote", "foreign-hotkey")
TEE_KINDS = ("tdx", "simulated")
INVOKE_AUTH_MODES = ("validator", "none")
#: longest token-coalescing window: beyond it a stream visibly stutters
MAX_COALESCE_MS = 250.0


@dataclass(frozen=True)
class MinerConfig:
    """Tunables of one miner instance (one process per GPU or GPU group)."""

    #: address uvicorn binds, and the address published on chain (None: ``host``)
    host: str = "127.0.0.1"
    port: int = 8091
    external_ip: str | None = None
    #: port published on chain when a NAT / port mapping differs from ``port`` (None: ``port``)
    external_port: int | None = None
    #: the model served; the chute id is derived from it
    model_id: str = inference.DEFAULT_MODEL_ID
    #: invokes served at the same time; more get 429 + Retry-After
    max_concurrency: int = 4
    #: largest request envelope accepted (bytes)
    max_body_bytes: int = protocol.MAX_ENVELOPE_BYTES
    #: seconds for one inference, first byte to last (streams included)
    request_timeout: float = 120.0
    #: padded v2 streams: milliseconds a frame waits for more tokens to share it (after
    #: the first token, which is never held; 0: one token per frame)
    stream_coalesce_ms: float = 20.0
    #: seconds to receive a request body
    body_timeout: float = 30.0
    #: seconds to produce attestation evidence
    attest_timeout: float = 30.0
    #: "validator": /e2e/invoke needs btauth/1 from a validator-permit hotkey;
    #: "none": open (development only)
    invoke_auth: str = "validator"
    #: smallest stake (whole units) a validator needs to be served
    min_validator_stake: float = 0.0
    #: seconds between two metagraph refreshes
    metagraph_refresh: float = 60.0
    #: seconds a retried request should wait after a 429
    retry_after: int = 1
    #: seconds uvicorn lets in-flight streams finish on shutdown
    shutdown_grace: float = 30.0
    #: evidence provider the runner builds: "tdx" (configfs-tsm + NVIDIA) or "simulated"
    tee: str = "tdx"
    #: publish ip:port on chain at start
    serve_axon: bool = True
    #: port of GET /metrics (Prometheus), off the public axon port; None serves /metrics on
    #: the axon port (library default). The CLI default is 9092 on ``metrics_host``.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    #: workload manifest file of an upstream engine's release (embedded: derived)
    workload_manifest: str | None = None
    #: the upstream engine's model directory, re-hashed against the manifest at start
    workload_model_dir: str | None = None
    #: DEV/TEST ONLY (simulated TEE): "wrong-tokens", "stall", "debug-quote", "foreign-hotkey"
    fault: str | None = None
    #: BENCH ONLY (simulated TEE): POST /dangerous/plaintext/invoke serves plaintext
    dangerous_plaintext_endpoint: bool = False
    #: base URLs of sibling instances this hotkey fronts (served in GET /fleet after this
    #: instance itself; each runs with the same hotkey and --axon.no_serve)
    fleet_instances: tuple[str, ...] = ()
    #: seconds a served instance list is valid (re-signed after half of it)
    fleet_ttl: int = 600

    def __post_init__(self) -> None:
        if not self.model_id:
            raise ValueError("model_id must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError("port must be in 1..65535")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise ValueError("metrics_port must be in 1..65535 (None: on the axon port)")
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("metrics_port must differ from the axon port")
        if self.external_port is not None and not 0 < self.external_port < 65536:
            raise ValueError("external_port must be in 1..65535")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if not 0 < self.max_body_bytes <= protocol.MAX_ENVELOPE_BYTES:
            raise ValueError(f"max_body_bytes must be in 1..{protocol.MAX_ENVELOPE_BYTES}")
        for name in ("request_timeout", "body_timeout", "attest_timeout", "metagraph_refresh"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if not 0 <= self.stream_coalesce_ms <= MAX_COALESCE_MS:
            raise ValueError(f"stream_coalesce_ms must be in 0..{MAX_COALESCE_MS:g}")
        if self.shutdown_grace < 0 or self.retry_after < 1:
            raise ValueError("shutdown_grace must be >= 0 and retry_after >= 1")
        if self.min_validator_stake < 0:
            raise ValueError("min_validator_stake must be >= 0")
        if self.invoke_auth not in INVOKE_AUTH_MODES:
            raise ValueError(f"invoke_auth must be one of {list(INVOKE_AUTH_MODES)}")
        if self.tee not in TEE_KINDS:
            raise ValueError(f"tee must be one of {list(TEE_KINDS)}")
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {list(FAULTS)}")
        if self.fault is not None and self.tee != "simulated":
            raise ValueError("fault injection is refused unless tee == 'simulated'")
        if self.dangerous_plaintext_endpoint and self.tee != "simulated":
            raise ValueError("dangerous_plaintext_endpoint is refused unless tee == 'simulated'")
        if not 0 < self.fleet_ttl <= protocol.MAX_FLEET_VALIDITY_SECONDS:
            raise ValueError(f"fleet_ttl must be in 1..{protocol.MAX_FLEET_VALIDITY_SECONDS}")
        if len(self.fleet_instances) >= protocol.MAX_FLEET_INSTANCES:
            raise ValueError(f"at most {protocol.MAX_FLEET_INSTANCES - 1} fleet instances "
                             "(siblings) may be listed")
        urls = [protocol.canonical_instance_url(u) for u in self.fleet_instances]
        if len(set(urls)) != len(urls):
            raise ValueError("fleet_instances lists an instance URL twice")

    @property
    def chute_id(self) -> str:
        """The chute id clients and the gateway address this model by."""
        return protocol.chute_id_for_model(self.model_id)

    @property
    def advertised_ip(self) -> str:
        """The IP published on chain: ``external_ip``, else ``host``."""
        return self.external_ip or self.host

    @property
    def advertised_url(self) -> str:
        """``http://ip:port`` validators derive from the published endpoint."""
        ip = self.advertised_ip
        host = f"[{ip}]" if ":" in ip else ip
        return f"http://{host}:{self.external_port or self.port}"
